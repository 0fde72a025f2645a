"""``datapilot bench serve``: throughput and latency of an OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datapilot.cli._common import err, out
from datapilot.core.errors import DataPilotError


def _pairs(specs: list[str]) -> list[tuple[int, int]]:
    pairs = []
    for spec in specs:
        try:
            i, o = spec.lower().split("x")
            pairs.append((int(i), int(o)))
        except ValueError:
            raise DataPilotError(f"--lengths takes INPUTxOUTPUT token counts such as 64x64, not {spec!r}") from None
    return pairs


def bench_serve(
    model: Annotated[str, typer.Option("--model", "-m", help="model name at the endpoint")] = "gemma-3-270m",
    url: Annotated[str, typer.Option(help="OpenAI-compatible API base")] = "http://127.0.0.1:5670/v1",
    parallel: Annotated[list[int] | None, typer.Option("--parallel", "-p", help="[default: 1 2 4 8 16 32]")] = None,
    lengths: Annotated[list[str] | None, typer.Option("--lengths", "-l", help="INPUTxOUTPUT [default: 64x64]")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="requests per parallel client")] = 2,
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the CSV and PNG")] = Path("bench-results"),
    name: Annotated[str, typer.Option(help="file name stem")] = "serve",
) -> None:
    """Send the same prompt at each parallelism and length; write a CSV row per run and a plot."""
    from datapilot.bench.serve import PARALLEL_DEFAULT, plot, run_level, write_csv

    levels = parallel or list(PARALLEL_DEFAULT)
    pairs = _pairs(lengths) if lengths else [(64, 64)]
    total = sum(p * rounds for p in levels) * len(pairs)
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("requests", total=total)
        for i, o in pairs:
            for p in levels:
                progress.update(task, description=f"parallel {p}, in {i} / out {o}")
                rows.append(
                    asyncio.run(run_level(url, model, p, i, o, rounds, api_key, lambda: progress.advance(task)))
                )
    table = Table(
        "parallel",
        "in",
        "out",
        "req",
        "err",
        "tokens/s",
        "ttft p50 ms",
        "ttft p99 ms",
        "latency avg ms",
        "latency p99 ms",
        "RSS MB",
        title=f"{model} at {url}",
    )
    for r in rows:
        table.add_row(
            str(r.parallel),
            str(r.input_len),
            str(r.output_len),
            str(r.requests),
            str(r.errors),
            f"{r.tokens_per_s:.1f}",
            f"{r.p50_ttft_ms:.0f}",
            f"{r.p99_ttft_ms:.0f}",
            f"{r.avg_latency_ms:.0f}",
            f"{r.p99_latency_ms:.0f}",
            f"{r.server_rss_mb:.0f}" if r.server_rss_mb is not None else "-",
        )
    out.print(table)
    csv_path, png_path = out_dir / f"{name}.csv", out_dir / f"{name}.png"
    write_csv(rows, csv_path)
    plot(rows, png_path)
    err.print(f"wrote {csv_path} and {png_path}")
    if all(r.errors == r.requests for r in rows):
        raise DataPilotError(f"every request failed: is {model!r} served at {url}?")
