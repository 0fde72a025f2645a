"""What the AWEL runner costs per operator, against plain awaited functions (and DB-GPT's AWEL).

Workloads, each ``--calls`` calls (default 1,000) after a warm-up:

* ``chain100``: an input node then 100 maps of ``x + 1``; reported per map;
* ``fanout50``: an input node fanned out to 50 maps of ``x + 1``, joined by one sum; reported per branch.

Each runs with sync map functions and with async ones. The baseline is the same work as a plain
chain of awaited ``async def`` functions (for the fan-out: 50 awaits, then the sum). With
``--dbgpt-python /path/to/venv/bin/python`` (an interpreter with ``dbgpt`` installed, kept out of
DataPilot's own environment) the same workloads run on DB-GPT's AWEL in a subprocess, side by side.

    .venv/bin/python benchmarks/awel_overhead.py [--calls 1000] [--dbgpt-python /tmp/dbgpt-venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

CHAIN, FANOUT = 100, 50
Runner = Callable[[int], Awaitable[Any]]


async def _measure(run: Runner, calls: int, expected: int) -> float:
    """Best of three rounds of ``calls`` calls, in seconds per call."""
    for i in range(min(100, calls)):
        got = await run(i)
        assert got == i + expected, f"wrong result {got} for {i}"
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(calls):
            await run(i)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _datapilot_workloads() -> dict[str, tuple[Runner, int, int]]:
    from datapilot.awel import DAG, InputOperator, JoinOperator, MapOperator

    def inc(x: int) -> int:
        return x + 1

    async def ainc(x: int) -> int:
        return x + 1

    out: dict[str, tuple[Runner, int, int]] = {}
    for label, fn in (("sync", inc), ("async", ainc)):
        with DAG(f"chain_{label}") as chain:
            node: Any = InputOperator()
            for _ in range(CHAIN):
                node = node >> MapOperator(fn)
        with DAG(f"fanout_{label}") as fan:
            src = InputOperator()
            maps = [MapOperator(fn) for _ in range(FANOUT)]
            src >> maps
            maps >> JoinOperator(lambda *xs: sum(xs) - (FANOUT - 1) * (min(xs) - 1) - (FANOUT - 1))
        out[f"chain{CHAIN} ({label})"] = (chain.run, CHAIN, CHAIN)
        out[f"fanout{FANOUT} ({label})"] = (fan.run, FANOUT, 1)
    return out


def _baseline_workloads() -> dict[str, tuple[Runner, int, int]]:
    async def ainc(x: int) -> int:
        return x + 1

    fns = [ainc] * CHAIN

    async def chain(x: int) -> int:
        for f in fns:
            x = await f(x)
        return x

    async def fan(x: int) -> int:
        outs = [await f(x) for f in fns[:FANOUT]]
        return sum(outs) - (FANOUT - 1) * (min(outs) - 1) - (FANOUT - 1)

    return {f"chain{CHAIN}": (chain, CHAIN, CHAIN), f"fanout{FANOUT}": (fan, FANOUT, 1)}


DBGPT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    t0 = time.perf_counter()
    from dbgpt.core.awel import DAG, InputOperator, JoinOperator, MapOperator, SimpleCallDataInputSource
    import_s = time.perf_counter() - t0
    CHAIN, FANOUT, calls = {chain}, {fanout}, {calls}

    def inc(x):
        return x + 1

    async def ainc(x):
        return x + 1

    def join(*xs):
        return sum(xs) - (FANOUT - 1) * (min(xs) - 1) - (FANOUT - 1)

    async def measure(task, expected):
        for i in range(min(100, calls)):
            got = await task.call(call_data=i)
            assert got == i + expected, got
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(calls):
                await task.call(call_data=i)
            best = min(best, (time.perf_counter() - start) / calls)
        return best

    async def main():
        out = {{"import_s": import_s}}
        for label, fn in (("sync", inc), ("async", ainc)):
            with DAG("chain_" + label):
                node = InputOperator(input_source=SimpleCallDataInputSource())
                for _ in range(CHAIN):
                    m = MapOperator(fn)
                    node >> m
                    node = m
            out["chain%d (%s)" % (CHAIN, label)] = await measure(node, CHAIN)
            with DAG("fanout_" + label):
                src = InputOperator(input_source=SimpleCallDataInputSource())
                j = JoinOperator(join)
                for _ in range(FANOUT):
                    m = MapOperator(fn)
                    src >> m >> j
            out["fanout%d (%s)" % (FANOUT, label)] = await measure(j, 1)
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def _import_time(python: str, module: str) -> float:
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    best = float("inf")
    for _ in range(3):
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
        best = min(best, float(done.stdout.strip().splitlines()[-1]))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="calls per workload and round (default 1000)")
    ap.add_argument("--dbgpt-python", help="python with dbgpt installed, to run DB-GPT's AWEL side by side")
    args = ap.parse_args()
    console = Console()

    ours = {k: asyncio.run(_measure(run, args.calls, exp)) / n for k, (run, n, exp) in _datapilot_workloads().items()}
    base = {k: asyncio.run(_measure(run, args.calls, exp)) / n for k, (run, n, exp) in _baseline_workloads().items()}
    theirs: dict[str, float] = {}
    if args.dbgpt_python:
        script = DBGPT_SCRIPT.format(chain=CHAIN, fanout=FANOUT, calls=args.calls)
        done = subprocess.run([args.dbgpt_python, "-c", script], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            console.print(f"[red]DB-GPT run failed:[/]\n{done.stderr[-2000:]}")
            return 1
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        theirs = {k: v / (CHAIN if k.startswith("chain") else FANOUT) for k, v in raw.items() if k != "import_s"}
    else:
        console.print("[dim]DB-GPT column skipped: pass --dbgpt-python /path/to/python with dbgpt installed[/]")

    table = Table(title=f"AWEL overhead, µs per operator (chain) / per branch (fan-out), {args.calls} calls, best of 3")
    table.add_column("workload")
    table.add_column("plain awaits", justify="right")
    table.add_column("DataPilot", justify="right")
    table.add_column("DataPilot - plain", justify="right")
    if theirs:
        table.add_column("DB-GPT 0.8.2", justify="right")
        table.add_column("DB-GPT / DataPilot", justify="right")
    for key, value in ours.items():
        plain = base[key.split(" ")[0]]
        row = [key, f"{plain * 1e6:.2f}", f"{value * 1e6:.2f}", f"{(value - plain) * 1e6:.2f}"]
        if theirs:
            row += [f"{theirs[key] * 1e6:.1f}", f"{theirs[key] / value:.0f}x"]
        table.add_row(*row)
    console.print(table)
    ours_import = _import_time(sys.executable, "datapilot.awel")
    line = f"import datapilot.awel: {ours_import * 1000:.0f} ms"
    if args.dbgpt_python:
        line += f"; import dbgpt.core.awel: {_import_time(args.dbgpt_python, 'dbgpt.core.awel') * 1000:.0f} ms"
    console.print(line)
    worst = max(v for k, v in ours.items()) * 1e6
    console.print(f"target under 10 µs per operator: {'met' if worst < 10 else 'NOT met'} (worst {worst:.2f} µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
