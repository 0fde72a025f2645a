"""``datapilot chat --scene data "question"``: chat with a database or a file from the command line.

Runs the scene in this process (loading only the chat model it needs) or, with ``--url``, through a
running server's ``POST /api/chat``. Prints the SQL, the table and the answer as they stream, and
writes the chart as PNG or SVG.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.syntax import Syntax

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, ServerOpt, err, out, settings_from, sse_events
from datapilot.core.config import Settings, trained_sql_models
from datapilot.core.errors import DataPilotError


def chat_model_name(settings: Settings, requested: str | None, db: str | None = None) -> str:
    """The chat model, by the server's own rule (``choose_chat_model``) over the configuration."""
    from datapilot.apps.services import choose_chat_model

    return choose_chat_model(settings, requested, None if requested else _sql_model(settings, db), None)


def _sql_model(settings: Settings, db: str | None) -> str | None:
    """The data source's own ``sql_model``, when it names a configured model."""
    from datapilot.datasource import DataSourceStore

    store = DataSourceStore.for_settings(settings.data, settings.home)
    try:
        config = store.get(db or settings.data.default_source)
    finally:
        store.close()
    return config.sql_model if config is not None else None


async def _local_events(settings: Settings, scene: str, request: Any, model: str) -> AsyncIterator[dict[str, Any]]:
    from datapilot.apps import ChatContext, SceneService
    from datapilot.cli._progress import model_progress
    from datapilot.datasource import DataSources
    from datapilot.models.manager import ModelManager

    cfg = settings.model(model)
    if cfg is None:
        known = ", ".join(m.name for m in settings.models)
        raise DataPilotError(f"model {model!r} is not configured (configured: {known})")
    manager = ModelManager([cfg], settings.home)
    sources = DataSources(settings.data, settings.home)
    try:
        with model_progress(err, [cfg.name]) as progress:
            await manager.start(progress)
        ctx = ChatContext(manager, model, sources, settings.data, trained=trained_sql_models(settings))
        service = SceneService(settings.home / "scenes")  # the server's scenes, the user's own included
        service.load_folder()
        async for event in service.events(scene, ctx, request):
            yield event.wire()
    finally:
        await manager.close()
        await sources.close()


def _write_chart(table: dict[str, Any], chart: dict[str, Any], folder: Path, fmt: str, stem: str) -> Path | None:
    from datapilot.apps import ChartSpec, render_chart
    from datapilot.datasource import QueryResult

    spec = ChartSpec(**chart["spec"])
    result = QueryResult(table.get("sql", ""), table["columns"], [tuple(r) for r in table["rows"]])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.{fmt}"
    path.write_bytes(render_chart(spec, result, fmt))
    return path


def chat_command(
    question: Annotated[str, typer.Argument(help="the question, in plain language (English or Chinese)")],
    scene: Annotated[
        str,
        typer.Option(
            "--scene", "-s", help="a scene: data, db_qa, excel, dashboard, chat, or one of yours (datapilot flow list)"
        ),
    ] = "data",
    db: Annotated[str | None, typer.Option("--db", "-d", help="data source name [default: sample]")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="CSV / xlsx / Parquet file (excel scene)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="chat model [default: the first one]")] = None,
    style: Annotated[
        str, typer.Option(help="text-to-SQL prompt: completion (base models) or chat (JSON)")
    ] = "completion",
    chart: Annotated[
        Path | None, typer.Option("--chart", help="folder for chart images [default: HOME/charts]")
    ] = None,
    chart_format: Annotated[str, typer.Option("--chart-format", help="png or svg")] = "png",
    url: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the final answer as JSON")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Ask a question about your data: SQL, table, chart and a short answer."""
    from datapilot.apps import SceneRequest

    settings = settings_from(config, profile, home)
    if file is not None and scene == "data":
        scene = "excel"
    if chart_format not in ("png", "svg"):
        raise DataPilotError("--chart-format must be png or svg")
    if url:
        if file is not None:
            raise DataPilotError("with --url, upload the file first: POST /api/datasources/upload, then --db NAME")
        key = settings.server.api_keys[0].get_secret_value() if settings.server.api_keys else None
        body = {"scene": scene, "question": question, "datasource": db, "model": model, "style": style}
        events = sse_events(url, key, "/api/chat", body, read_timeout_s=600)
    else:
        name = chat_model_name(settings, model, db)
        request = SceneRequest(question, db, name, style, str(file) if file else None)
        events = _local_events(settings, scene, request, name)
    folder = chart or settings.home / "charts"
    stamp = time.strftime("%Y%m%d-%H%M%S")

    async def run() -> dict[str, Any]:
        final: dict[str, Any] = {}
        table: dict[str, Any] | None = None
        streaming = False
        async for ev in events:
            kind = ev.get("type")
            if kind == "done":
                final = ev["answer"]
                continue
            if as_json:
                continue
            if kind == "step" and ev.get("name") == "attempt" and ev.get("error"):
                err.print(f"[dim]attempt {ev['round'] + 1}: {ev.get('sql')!s} -> {ev['error']}[/]", highlight=False)
            elif kind == "sql":
                out.print(Syntax(ev["sql"], "sql", word_wrap=True))
            elif kind == "table":
                from datapilot.cli.db import print_result
                from datapilot.datasource import QueryResult

                table = ev
                print_result(QueryResult(ev["sql"], ev["columns"], [tuple(r) for r in ev["rows"]], ev["truncated"]), 20)
            elif kind == "chart" and table is not None:
                path = _write_chart(table, ev, folder, chart_format, f"chart-{stamp}")
                out.print(f"[dim]chart ({ev['spec']['kind']}): {path}[/]")
            elif kind == "columns":
                for tname, cols in ev["tables"].items():
                    out.print(
                        f"[bold]{tname}[/]: " + ", ".join(f"{c['original']} -> {c['name']} ({c['type']})" for c in cols)
                    )
            elif kind == "analysis":
                out.print(f"[bold]{ev['index'] + 1}. {ev['title']}[/]")
                if ev.get("sql"):
                    out.print(Syntax(ev["sql"], "sql", word_wrap=True))
                if "table" in ev:
                    path = _write_chart(
                        ev["table"], ev["chart"], folder, chart_format, f"dashboard-{stamp}-{ev['index'] + 1}"
                    )
                    out.print(f"[dim]{ev['table']['row_count']} rows; chart ({ev['chart']['spec']['kind']}): {path}[/]")
                elif ev.get("error"):
                    err.print(f"[red]{ev['error']['message']}[/]", highlight=False)
            elif kind == "text":
                if not streaming:
                    out.print("[bold blue]answer>[/] ", end="")
                    streaming = True
                out.print(ev["delta"], end="", markup=False, highlight=False)
            elif kind == "error":
                err.print(f"[red]error:[/] {ev['error']['message']}", highlight=False)
        if streaming:
            out.print()
        return final

    final = asyncio.run(run())
    if as_json:
        out.print_json(json.dumps(final, ensure_ascii=False))
    elif final.get("summary"):
        err.print(f"[dim]{final['summary']}[/]")
    if final.get("error") and not final.get("table") and not final.get("analyses"):
        raise typer.Exit(1)
