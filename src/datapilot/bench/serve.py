"""The serving benchmark: throughput and latency of an OpenAI-compatible endpoint under parallel load.

For each (parallel, input length, output length) it sends the same prompt from ``parallel``
concurrent clients (``rounds`` requests each, after a warm-up), streams every answer to time its
first token, and records one row. Works against DataPilot or any OpenAI-compatible server, so two
servers can be compared on the same model.
"""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx

from datapilot.core.errors import DataPilotError

PARALLEL_DEFAULT = (1, 2, 4, 8, 16, 32)
LENGTHS_DEFAULT = ((64, 64),)


@dataclass(slots=True)
class ServeRow:
    model: str
    parallel: int
    input_len: int
    output_len: int
    requests: int
    errors: int
    total_s: float
    total_tokens: int
    tokens_per_s: float
    avg_ttft_ms: float
    p50_ttft_ms: float
    p99_ttft_ms: float
    avg_latency_ms: float
    p50_latency_ms: float
    p99_latency_ms: float
    prompt_tokens: int
    server_rss_mb: float | None
    gpu_mem_mb: float | None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def make_prompt(n_tokens: int) -> str:
    """About ``n_tokens`` tokens for most tokenizers: short common words, one token each."""
    words = ("data", "model", "table", "query", "answer", "chart", "value", "count")
    return " ".join(words[i % len(words)] for i in range(max(1, n_tokens)))


async def _one(client: httpx.AsyncClient, model: str, prompt: str, output_len: int) -> tuple[float, float, int, int]:
    """(first-token s, latency s, completion tokens, prompt tokens) for one streamed completion."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": output_len,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft: float | None = None
    completion = prompt_tokens = chunks = 0
    async with client.stream("POST", "/completions", json=body) as resp:
        if resp.status_code != 200:
            raise DataPilotError(f"HTTP {resp.status_code}: {(await resp.aread())[:300].decode(errors='replace')}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            obj = json.loads(line[5:])
            if "error" in obj:
                raise DataPilotError(str(obj["error"]))
            for choice in obj.get("choices") or ():
                if choice.get("text"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
            usage = obj.get("usage")
            if usage:
                completion, prompt_tokens = int(usage["completion_tokens"]), int(usage["prompt_tokens"])
    latency = time.perf_counter() - started
    return (ttft if ttft is not None else latency), latency, completion or chunks, prompt_tokens


def _server_rss_mb(client: httpx.Client, base: str) -> float | None:
    """Resident memory of a DataPilot server, from its /metrics; None for servers without it."""
    try:
        text = client.get(base.removesuffix("/v1") + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / 2**20
    return None


def _gpu_mem_mb() -> float | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return sum(float(x) for x in out.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


async def run_level(
    base_url: str,
    model: str,
    parallel: int,
    input_len: int,
    output_len: int,
    rounds: int,
    api_key: str | None = None,
    on_request: Callable[[], None] | None = None,
) -> ServeRow:
    prompt = make_prompt(input_len)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=parallel + 2)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600, limits=limits) as client:
        await _one(client, model, prompt, min(output_len, 8))  # warm-up: load, caches, connections
        results: list[tuple[float, float, int, int]] = []
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for _ in range(rounds):
                try:
                    results.append(await _one(client, model, prompt, output_len))
                except (DataPilotError, httpx.HTTPError):
                    errors += 1
                if on_request:
                    on_request()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        total = time.perf_counter() - started
    ttfts = [r[0] * 1000 for r in results]
    lats = [r[1] * 1000 for r in results]
    tokens = sum(r[2] for r in results)
    with httpx.Client(headers=headers) as sync:
        rss = _server_rss_mb(sync, base_url)
    return ServeRow(
        model=model,
        parallel=parallel,
        input_len=input_len,
        output_len=output_len,
        requests=len(results) + errors,
        errors=errors,
        total_s=round(total, 3),
        total_tokens=tokens,
        tokens_per_s=round(tokens / total, 2) if total else 0.0,
        avg_ttft_ms=round(statistics.fmean(ttfts), 2) if ttfts else 0.0,
        p50_ttft_ms=round(_pct(ttfts, 0.5), 2),
        p99_ttft_ms=round(_pct(ttfts, 0.99), 2),
        avg_latency_ms=round(statistics.fmean(lats), 2) if lats else 0.0,
        p50_latency_ms=round(_pct(lats, 0.5), 2),
        p99_latency_ms=round(_pct(lats, 0.99), 2),
        prompt_tokens=results[0][3] if results else 0,
        server_rss_mb=rss,
        gpu_mem_mb=_gpu_mem_mb(),
    )


def write_csv(rows: list[ServeRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(ServeRow)])
        w.writeheader()
        w.writerows(asdict(r) for r in rows)


def plot(rows: list[ServeRow], path: Path) -> None:
    """Tokens/s and latency against parallelism, one line per (input, output) length pair."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataPilotError("the plot needs matplotlib: pip install 'datapilot[bench]'") from None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in sorted({(r.input_len, r.output_len) for r in rows}):
        sel = sorted((r for r in rows if (r.input_len, r.output_len) == key), key=lambda r: r.parallel)
        xs = [r.parallel for r in sel]
        label = f"in {key[0]} / out {key[1]}"
        ax1.plot(xs, [r.tokens_per_s for r in sel], marker="o", label=label)
        ax2.plot(xs, [r.p50_latency_ms for r in sel], marker="o", label=f"{label} p50")
        ax2.plot(xs, [r.p50_ttft_ms for r in sel], marker="x", linestyle="--", label=f"{label} first token p50")
    for ax, title, unit in ((ax1, "throughput", "tokens/s"), (ax2, "latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("parallel requests")
        ax.set_ylabel(unit)
        ax.set_title(f"{rows[0].model}: {title}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
