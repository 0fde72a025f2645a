"""``datapilot audit show``: the server's audit log, read from the files under ``DATAPILOT_HOME/audit/``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, out, settings_from

audit_app = typer.Typer(help="The audit log: who called what, when, and how it ended.", no_args_is_help=True)


@audit_app.command("show")
def audit_show(
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time, or a span back: 30m, 2h, 7d")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time, or a span back")] = None,
    route: Annotated[str | None, typer.Option("--route", help="route template, or its start: /v1/chat")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    key: Annotated[str | None, typer.Option("--key", help="the key's fingerprint, as records show it")] = None,
    status: Annotated[int | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="records, newest first")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON record per line")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Print the newest records (across the rotated files), filtered."""
    from datapilot.server.audit import audit_folder, read_records

    settings = settings_from(config, profile, home)
    records = read_records(
        audit_folder(settings.home),
        since=since,
        until=until,
        route=route,
        model=model,
        key=key,
        status=status,
        limit=limit,
    )
    if as_json:
        for rec in records:
            print(json.dumps(rec, ensure_ascii=False))
        return
    table = Table("time", "key", "tenant", "request", "status", "ms", "model", "data / space", "error")
    for rec in records:
        target = rec.get("data_source") or rec.get("knowledge_space") or ""
        table.add_row(
            str(rec.get("ts", "")),
            str(rec.get("key") or "-"),
            str(rec.get("tenant") or "-"),
            f"{rec.get('method', '')} {rec.get('route', '')}",
            str(rec.get("status", "")),
            str(rec.get("duration_ms", "")),
            str(rec.get("model") or ""),
            str(target),
            str(rec.get("error") or ""),
        )
    out.print(table)
    if not records:
        out.print("no audit records" + (" match" if any((since, until, route, model, key, status)) else ""))
