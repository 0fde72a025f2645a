"""The Ray runtime's cost and scaling, against the local (in-process) runtime, on a two-node local Ray
cluster (two raylets on this host, 2 CPUs each).

1. Added latency: an instant scripted model (``echo``) behind `datapilot start` (in-process routing)
   and behind `datapilot start --runtime ray` (the same model as a Ray actor); sequential requests,
   alternating between the two servers; p50/p99 and what Ray adds.
2. Scaling: a scripted model that holds its instance 50 ms per request (``busy_s``, one at a time),
   first 1 instance, then 4 (``datapilot model start`` three times, placed over both nodes); 16
   concurrent clients; requests/s and the ratio.
3. Start-up of `datapilot start --runtime ray` on the embedded defaults (a local Ray started by the
   server): seconds to /health and the memory of the server and its Ray processes.

    .venv/bin/python benchmarks/ray_runtime.py [--requests 400] [--skip-startup]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from datapilot.testing import ServerProcess, start_ray_cluster, start_server, write_config

console = Console()
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def latency(servers: dict[str, ServerProcess], requests: int) -> dict[str, list[float]]:
    clients = {name: httpx.Client(base_url=s.v1, timeout=30) for name, s in servers.items()}
    times: dict[str, list[float]] = {name: [] for name in servers}
    for c in clients.values():  # warm up
        for _ in range(20):
            c.post("/chat/completions", json=BODY).raise_for_status()
    for _ in range(requests):
        for name, c in clients.items():
            t0 = time.perf_counter()
            c.post("/chat/completions", json=BODY).raise_for_status()
            times[name].append((time.perf_counter() - t0) * 1000)
    for c in clients.values():
        c.close()
    return times


async def throughput(url: str, model: str, clients: int, seconds: float) -> float:
    done = 0
    body = {**BODY, "model": model}
    deadline = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            (await c.post("/chat/completions", json=body)).raise_for_status()
            done += 1

    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        return done / (time.perf_counter() - t0)


def tree_rss_mb(pids: list[int]) -> float:
    seen: set[int] = set()
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for p in [root, *root.children(recursive=True)]:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    return total / 2**20


def ray_processes() -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray" in cmd and ("raylet" in cmd or "gcs_server" in cmd or "ray::" in cmd or "default_worker" in cmd):
            out.append(p.info["pid"])
    return out


def startup(tmp: Path, runtime: str) -> tuple[float, float, float]:
    """Seconds to /health, and MB: the server process, and every other process started with it (a
    local Ray's processes and its model actors)."""
    before = set(ray_processes())
    cfg = tmp / "defaults.toml"
    cfg.write_text("")  # the embedded defaults: no [[models]], no [ray] address (a local Ray)
    t0 = time.perf_counter()
    server = start_server(tmp, cfg, tmp / "home", f"startup-{runtime}", role=["--runtime", runtime], timeout=600)
    up = time.perf_counter() - t0
    try:
        time.sleep(3)
        mine = [pid for pid in ray_processes() if pid not in before]
        # The local Ray's processes are children of the server: count each process once.
        server_mb = psutil.Process(server.process.pid).memory_info().rss / 2**20
        total_mb = tree_rss_mb([server.process.pid, *mine])
        return up, server_mb, total_mb - server_mb
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-startup", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    home = tmp / "home"
    models = [
        {"name": "echo", "backend": "scripted", "resources": {"num_cpus": 0.25}},
        {"name": "busy", "backend": "scripted", "params": {"busy_s": 0.05}, "resources": {"num_cpus": 0.5}},
    ]
    cluster = start_ray_cluster(tmp, nodes=2, cpus_per_node=2)
    servers: dict[str, ServerProcess] = {}
    try:
        local_cfg = write_config(tmp / "local.toml", models)
        ray_cfg = write_config(tmp / "ray.toml", models, ray={"health_interval_s": 1.0})
        servers["local"] = start_server(tmp, local_cfg, home, "local")
        servers["ray"] = start_server(
            tmp, ray_cfg, home, "ray", role=["--runtime", "ray", "--ray-address", cluster.address], env=cluster.env
        )
        times = latency(servers, args.requests)
        table = Table("server", "p50 ms", "p99 ms", "mean ms", title=f"instant model, {args.requests} sequential")
        for name, xs in times.items():
            table.add_row(name, f"{_pct(xs, 0.5):.2f}", f"{_pct(xs, 0.99):.2f}", f"{statistics.mean(xs):.2f}")
        console.print(table)
        added = _pct(times["ray"], 0.5) - _pct(times["local"], 0.5)
        console.print(f"Ray adds [bold]{added:.2f} ms[/] at p50 (target < 2 ms)")

        ray_url = servers["ray"].v1
        one = asyncio.run(throughput(ray_url, "busy", 16, args.seconds))
        env = {**os.environ, **cluster.env}
        for _ in range(3):
            subprocess.run(
                [sys.executable, "-m", "datapilot", "model", "start", "busy", "--url", servers["ray"].url],
                check=True,
                capture_output=True,
                env=env,
            )
        nodes = {
            i["node"]
            for m in httpx.get(f"{servers['ray'].url}/api/models").json()["models"]
            if m["name"] == "busy"
            for i in m["instances"]
        }
        four = asyncio.run(throughput(ray_url, "busy", 16, args.seconds))
        table = Table("instances", "requests/s", title="busy model (50 ms a request, one at a time), 16 clients")
        table.add_row("1", f"{one:.1f}")
        table.add_row(f"4 (on {len(nodes)} nodes)", f"{four:.1f}")
        console.print(table)
        console.print(f"1 -> 4 instances: [bold]{four / one:.2f}x[/] requests/s (target >= 3.5x)")
    finally:
        for s in servers.values():
            s.stop()
        cluster.stop()
    if not args.skip_startup:
        table = Table("runtime", "up in s", "server MB", "other processes MB", "total MB", title="embedded defaults")
        for runtime in ("local", "ray"):
            up, server_mb, others_mb = startup(tmp, runtime)
            table.add_row(runtime, f"{up:.1f}", f"{server_mb:.0f}", f"{others_mb:.0f}", f"{server_mb + others_mb:.0f}")
        console.print(table)


if __name__ == "__main__":
    main()
