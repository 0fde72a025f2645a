"""What API keys and limits add to a request: p50 per request with and without them (target: < 0.2 ms).

Four servers in this process, each a real ``create_app`` around the zero-cost scripted model (the
cache and the audit log off, so only authentication and limits differ), called in turn over ASGI
(httpx's ``ASGITransport``: no sockets, no threads), so machine noise hits all of them alike:

* ``open``: no keys, limits off (the baseline);
* ``limits``: no keys, limits on (usage recorded for the default tenant);
* ``keys``: a tenant's ``dpk_`` key (hashed, looked up in keys.db), limits off;
* ``keys+limits``: the same key with its rpm and tpm, a model rpm/tpm and a tenant budget, all far
  from being reached, so every check runs and none refuses.

Each "added" figure is the median of the per-round differences against ``open``. Also timed: the gate
alone (admit + charge of one call, in-process).

    .venv/bin/python benchmarks/auth_limits.py [--n 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from rich.console import Console
from rich.table import Table

from datapilot.core.config import ModelConfig, Settings
from datapilot.core.keys import KeyStore
from datapilot.core.limits import Budget, LimitGate, ModelLimits, UsageLedger
from datapilot.core.tenancy import Principal, acting_as
from datapilot.core.types import Usage
from datapilot.server.app import create_app

BIG = 10**9  # limits that every check reads and none reaches
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
CONFIGS = ("open", "limits", "keys", "keys+limits")


def settings(home: Path, *, limits: bool, model_limits: bool) -> Settings:
    rates = {"rpm": BIG, "tpm": BIG} if model_limits else {}
    return Settings.model_validate(
        {
            "home": home,
            "models": [ModelConfig(name="echo", backend="scripted", params={"replies": ["one two three"]}, **rates)],
            "cache": {"enabled": False},
            "audit": {"enabled": False},
            "knowledge": {"embedder": {"kind": "hash"}},
            "data": {"model": "echo", "embedder": {"kind": "hash"}, "sample": False},
            "limits": {"enabled": limits},
            "server": {"access_log": False, "log_level": "warning"},
        }
    )


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield client


def build(root: Path, name: str) -> tuple[FastAPI, dict[str, str]]:
    home = root / name.replace("+", "_")
    keyed, limited = name.startswith("keys"), name.endswith("limits")
    headers: dict[str, str] = {}
    if keyed:
        store = KeyStore.for_home(home)
        try:
            _, key = store.create("bench", level="read", rpm=BIG, tpm=BIG)
            store.set_budget("bench", daily_tokens=BIG, monthly_tokens=BIG)
        finally:
            store.close()
        headers["Authorization"] = f"Bearer {key}"
    return create_app(settings(home, limits=limited, model_limits=limited and keyed)), headers


async def one(client: httpx.AsyncClient, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    resp = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    elapsed = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        raise SystemExit(f"unexpected {resp.status_code}: {resp.text}")
    return elapsed


def gate_alone(n: int) -> float:
    """Microseconds per call for admit + charge, every check active (in memory; no disk)."""
    gate = LimitGate(
        UsageLedger(None),
        model_limits={"echo": ModelLimits(BIG, BIG)},
        budgets=lambda _: Budget(BIG, BIG),
    )
    principal = Principal("bench", "read", "k1", {}, BIG, BIG)
    usage = Usage(2, 3)
    with acting_as(principal):
        t0 = time.perf_counter()
        for _ in range(n):
            gate.admit_request(principal)
            gate.admit("echo", "chat")(usage)
        return (time.perf_counter() - t0) / n * 1e6


async def run(n: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        apps = {name: build(root, name) for name in CONFIGS}
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        async with AsyncExitStack() as stack:
            clients = {name: await stack.enter_async_context(served(app)) for name, (app, _) in apps.items()}
            for i in range(n + warmup):
                for name in CONFIGS:  # one request each per round: noise falls on all of them
                    took = await one(clients[name], apps[name][1])
                    if i >= warmup:
                        times[name].append(took)
    base = times["open"]
    out: dict[str, Any] = {"n": n, "configs": {}}
    for name in CONFIGS:
        added = [t - b for t, b in zip(times[name], base, strict=True)]
        out["configs"][name] = {
            "p50_ms": round(statistics.median(times[name]), 4),
            "added_p50_ms": round(statistics.median(added), 4),
        }
    out["gate_alone_us"] = round(gate_alone(20_000), 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="timed requests per configuration (default 2000)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    result = asyncio.run(run(args.n, args.warmup))
    table = Table("configuration", "p50 ms", "added p50 ms (vs open)")
    for name, row in result["configs"].items():
        table.add_row(name, f"{row['p50_ms']:.3f}", f"{row['added_p50_ms']:+.3f}")
    console = Console(width=120)
    console.print(table)
    console.print(f"the gate alone (admit + charge, every check): {result['gate_alone_us']:.1f} µs per call")
    added = result["configs"]["keys+limits"]["added_p50_ms"]
    console.print(f"auth + limits add {added:.3f} ms p50 per request (target < 0.2 ms)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
