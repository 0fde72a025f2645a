"""What DataPilot's API server adds in front of an OpenAI-compatible upstream that answers instantly.

Three processes: a minimal upstream (raw ASGI, answers at once: a JSON completion, or a stream of
20 chunks), DataPilot (`datapilot start`, the model is an `openai_compat` proxy to the upstream,
pinned to one core), and this load generator (a bare keep-alive HTTP/1.1 client, so the client is
not what is measured). Each workload runs against the upstream directly and through DataPilot,
side by side, at concurrency 1 and 32; it reports p50/p99 latency, what DataPilot adds, and
requests/s.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 2000] [--csv FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from datapilot.testing import free_port, start_server, write_config

CHUNKS = 20


# -- the upstream: a raw ASGI app, as cheap as an HTTP server in Python gets ---------------------


def _completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()


def _chunk(i: int, model: str) -> bytes:
    last = i == CHUNKS - 1
    choice = {"index": 0, "delta": {} if last else {"content": f"t{i} "}, "finish_reason": "stop" if last else None}
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]}
    if last:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": CHUNKS - 1, "total_tokens": CHUNKS + 4}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def upstream_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    req = json.loads(body or b"{}")
    model = req.get("model", "up")
    if req.get("stream"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(CHUNKS):
            await send({"type": "http.response.body", "body": _chunk(i, model), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": _completion(model)})


# -- a bare HTTP/1.1 client ----------------------------------------------------------------------


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
        }
        if b"content-length" in headers:
            data = await self.reader.readexactly(int(headers[b"content-length"]))
        else:  # chunked
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return data


async def load(port: int, model: str, stream: bool, concurrency: int, requests: int) -> tuple[list[float], float]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode()
    latencies: list[float] = []
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        conn = Conn("127.0.0.1", port)
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            data = await conn.post("/v1/chat/completions", body)
            latencies.append(time.perf_counter() - t0)
            if stream:
                assert data.rstrip().endswith(b"[DONE]"), data[-100:]
        if conn.writer is not None:
            conn.writer.close()

    for _ in range(20):  # warm-up: connections, caches
        await Conn("127.0.0.1", port).post("/v1/chat/completions", body)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, requests / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per run at concurrency 32")
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        import uvicorn

        uvicorn.run(upstream_app, host="127.0.0.1", port=args.serve_upstream, log_level="warning", access_log=False)
        return 0

    console = Console(width=150)
    up_port = free_port()
    cores = os.cpu_count() or 1
    pin_upstream = ["taskset", "-c", str(cores - 1)] if cores > 1 else []
    upstream = subprocess.Popen([*pin_upstream, sys.executable, __file__, "--serve-upstream", str(up_port)])
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(
                Path(tmp) / "datapilot.toml",
                [{"name": "up", "backend": "openai_compat", "base_url": f"http://127.0.0.1:{up_port}/v1"}],
                server={"log_level": "warning", "access_log": False},
            )
            server = start_server(Path(tmp), cfg, Path(tmp) / "home", "gateway")
            dp_port = int(server.url.rsplit(":", 1)[1])
            if cores > 1:  # DataPilot on one core of its own; upstream and load generator on the other
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", "0", str(server.process.pid)], check=True, capture_output=True
                )
                os.sched_setaffinity(0, {cores - 1})
            try:
                for stream in (False, True):
                    for conc in (1, 32):
                        n = args.requests if conc > 1 else max(200, args.requests // 4)
                        direct, direct_rps = asyncio.run(load(up_port, "up", stream, conc, n))
                        via, via_rps = asyncio.run(load(dp_port, "up", stream, conc, n))
                        rows.append(
                            {
                                "workload": f"{'stream 20 chunks' if stream else 'non-stream'}",
                                "concurrency": conc,
                                "requests": n,
                                "direct_p50_ms": pct(direct, 0.5),
                                "direct_p99_ms": pct(direct, 0.99),
                                "datapilot_p50_ms": pct(via, 0.5),
                                "datapilot_p99_ms": pct(via, 0.99),
                                "added_p50_ms": pct(via, 0.5) - pct(direct, 0.5),
                                "added_p99_ms": pct(via, 0.99) - pct(direct, 0.99),
                                "direct_rps": direct_rps,
                                "datapilot_rps": via_rps,
                            }
                        )
            finally:
                server.stop()
    finally:
        upstream.terminate()
        upstream.wait()

    table = Table(*rows[0].keys(), title="DataPilot in front of an instant upstream (DataPilot on one core)")
    for r in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(table)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
