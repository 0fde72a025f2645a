"""``datapilot agent run "goal"``: a team of agents plans, queries, charts and writes a report.

Runs in this process (loading only the chat model) or, with ``--url``, through a running server's
``POST /api/agents/run``. Each step is printed as it happens; the report (markdown), its charts (SVG)
and the run's trace (JSON) can be written to files.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markdown import Markdown

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, ServerOpt, err, out, settings_from, sse_events
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError

agent_app = typer.Typer(help="Run teams of agents over your data.", no_args_is_help=True)

QUIET = {"message", "table"}  # shown with --verbose only


async def _local_events(settings: Settings, body: dict[str, Any], model: str) -> AsyncIterator[dict[str, Any]]:
    from datapilot.apps import AgentRunRequest, ChatContext, agent_events
    from datapilot.cli._progress import model_progress
    from datapilot.datasource import DataSources
    from datapilot.models.manager import ModelManager

    cfg = settings.model(model)
    if cfg is None:
        known = ", ".join(m.name for m in settings.models)
        raise DataPilotError(f"model {model!r} is not configured (configured: {known})")
    manager = ModelManager([cfg], settings.home)
    sources = DataSources(settings.data, settings.home)
    knowledge = None
    try:
        if body.get("space"):
            from datapilot.rag import KnowledgeBase, KnowledgeSettings

            knowledge = KnowledgeBase(KnowledgeSettings.from_settings(settings), settings.home)
            await knowledge.open()
        with model_progress(err, [cfg.name]) as progress:
            await manager.start(progress)
        ctx = ChatContext(manager, model, sources, settings.data)
        run = AgentRunRequest(
            body["goal"],
            body.get("datasource"),
            body.get("space"),
            model,
            body.get("agents"),
            max_rounds=body.get("max_rounds"),
            max_tokens=body.get("max_tokens"),
        )
        async for event in agent_events(ctx, run, settings.agents, knowledge=knowledge):
            yield event
    finally:
        await manager.close()
        await sources.close()
        if knowledge is not None:
            await knowledge.close()


@agent_app.command("run")
def run_command(
    goal: Annotated[str, typer.Argument(help="what the team should find out, in plain language")],
    db: Annotated[str | None, typer.Option("--db", "-d", help="data source name [default: sample]")] = None,
    knowledge: Annotated[str | None, typer.Option("--knowledge", "-k", help="knowledge space to search")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="chat model [default: the first one]")] = None,
    agents: Annotated[
        list[str] | None, typer.Option("--agent", "-a", help="agents on the team (repeat) [default: all that fit]")
    ] = None,
    max_rounds: Annotated[int | None, typer.Option("--max-rounds", min=1, help="review rounds, at most")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=100, help="token budget of the run")] = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="folder for report.md and the charts' SVG files")
    ] = None,
    trace_file: Annotated[Path | None, typer.Option("--trace", help="write the run's trace (JSON) here")] = None,
    url: ServerOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print every message and table too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report and charts as JSON at the end")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Plan, query, chart and report on a goal over a data source, showing each step."""
    from datapilot.agents import Trace, describe
    from datapilot.cli.chat import chat_model_name

    settings = settings_from(config, profile, home)
    body: dict[str, Any] = {
        "goal": goal,
        "datasource": db,
        "space": knowledge,
        "model": model,
        "agents": agents,
        "max_rounds": max_rounds,
        "max_tokens": max_tokens,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if url:
        key = settings.server.api_keys[0].get_secret_value() if settings.server.api_keys else None
        events = sse_events(url, key, "/api/agents/run", body, read_timeout_s=None)
    else:
        events = _local_events(settings, body, chat_model_name(settings, settings.agents.model or model))
    trace = Trace(goal)

    async def run() -> dict[str, Any]:
        final: dict[str, Any] = {}
        async for ev in events:
            trace.records.append(ev)
            trace.run_id = ev.get("run_id", trace.run_id)
            kind = ev.get("type")
            if kind == "report":
                final.update(report=ev["markdown"], charts=ev["charts"])
            elif kind == "done":
                final.update(ok=ev.get("ok"), rounds=ev.get("rounds"), tokens=ev.get("tokens"))
            if as_json or (kind in QUIET and not verbose) or kind == "report":
                continue
            style = "red" if kind == "error" else ("bold" if kind in ("plan", "step_start", "review") else "dim")
            err.print(f"[{style}]{describe(ev, 200 if not verbose else 2000)}[/]", markup=True, highlight=False)
        return final

    try:
        final = asyncio.run(run())
    finally:
        if trace_file is not None and trace.records:
            trace.save(trace_file)
            err.print(f"[dim]trace: {trace_file}[/]")
    report = final.get("report")
    if output is not None and report:
        output.mkdir(parents=True, exist_ok=True)
        (output / "report.md").write_text(report, encoding="utf-8")
        for chart in final.get("charts", []):
            if chart.get("svg"):
                (output / chart["file"]).write_text(chart["svg"], encoding="utf-8")
        err.print(f"[dim]report: {output / 'report.md'} ({len(final.get('charts', []))} chart(s))[/]")
    if as_json:
        out.print_json(json.dumps({"run_id": trace.run_id, **final}, ensure_ascii=False, default=str))
    elif report:
        out.print(Markdown(report))
    if not report:
        raise typer.Exit(1)


@agent_app.command("list")
def list_command(
    url: Annotated[str | None, typer.Option("--url", help="a running server (shows its plugins too)")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List the agents and tools a team can use."""
    if url:
        settings = settings_from(config, profile)
        key = settings.server.api_keys[0].get_secret_value() if settings.server.api_keys else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            data = httpx.get(f"{url.rstrip('/').removesuffix('/v1')}/api/agents", headers=headers, timeout=30).json()
        except httpx.HTTPError as exc:
            raise DataPilotError(f"no server answering at {url} ({exc})") from None
        agents, tools = data["agents"], data["tools"]
    else:
        from datapilot.agents import AGENTS, TOOLS

        agents = [AGENTS.get(n).to_dict() for n in AGENTS.names()]
        tools = [{"name": n, "description": TOOLS.get(n).description} for n in TOOLS.names()]
    for a in agents:
        out.print(f"[bold]{a['name']}[/]: {a['description']}")
    for t in tools:
        out.print(f"[bold]tool {t['name']}[/]: {t['description']}")
