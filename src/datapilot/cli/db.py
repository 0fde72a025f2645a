"""``datapilot db add|list|test|schema|remove|query``: data sources in the metadata store under --home.

Passwords are read from ``--password-stdin`` or a prompt (or taken out of a URL), stored apart from
the URL, and never printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, out, settings_from
from datapilot.cli.db_examples import examples_app
from datapilot.core.config import Settings

T = TypeVar("T")

db_app = typer.Typer(help="Data sources: add, list, test, schema, remove, query.", no_args_is_help=True)
db_app.add_typer(examples_app, name="examples")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def with_sources(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from datapilot.datasource import DataSources

    async def run() -> T:
        sources = DataSources(settings.data, settings.home)
        try:
            return await work(sources)
        finally:
            await sources.close()

    return asyncio.run(run())


@db_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="a name for the data source")],
    kind: Annotated[
        str, typer.Option("--kind", "-k", help="sqlite, duckdb, postgresql, mysql, mariadb, csv, excel, parquet")
    ],
    url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (a password in it is stored apart)")] = None,
    path: Annotated[str | None, typer.Option(help="SQLite / DuckDB file")] = None,
    file: Annotated[
        list[str] | None, typer.Option("--file", "-f", help="CSV / xlsx / Parquet file (repeatable)")
    ] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    ask_password: Annotated[bool, typer.Option("--ask-password", help="prompt for the password")] = False,
    description: Annotated[str, typer.Option(help="what the data is about")] = "",
    test: Annotated[bool, typer.Option("--test/--no-test", help="connect before registering")] = True,
    replace: Annotated[bool, typer.Option(help="replace a source of the same name")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Register a data source (connection tested first)."""
    from pydantic import SecretStr

    from datapilot.datasource import DataSourceConfig

    password: SecretStr | None = None
    if password_stdin:
        password = SecretStr(sys.stdin.readline().rstrip("\n"))
    elif ask_password:
        password = SecretStr(typer.prompt("password", hide_input=True))
    cfg = DataSourceConfig(
        name=name, kind=kind, url=url, path=path, files=list(file or []), password=password, description=description
    )
    added = with_sources(settings_from(config, profile, home), lambda s: s.add(cfg, test=test, replace=replace))
    out.print_json(json.dumps(added.public()))


@db_app.command("list")
def list_(as_json: JsonOpt = False, config: ConfigOpt = None, profile: ProfileOpt = None, home: HomeOpt = None) -> None:
    """List registered data sources (passwords shown as ***)."""

    async def work(sources: Any) -> list[dict[str, Any]]:
        return [c.public() for c in sources.list()]

    rows = with_sources(settings_from(config, profile, home), work)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "kind", "where", "password", "description")
    for r in rows:
        where = r["url"] or r["path"] or ", ".join(Path(f).name for f in r["files"]) or "-"
        table.add_row(r["name"], r["kind"], where, r["password"] or "", r["description"])
    out.print(table)


@db_app.command("test")
def test_(name: str, config: ConfigOpt = None, profile: ProfileOpt = None, home: HomeOpt = None) -> None:
    """Connect and run SELECT 1."""

    async def work(sources: Any) -> dict[str, Any]:
        connector = await sources.connector(name)
        result = await connector.run("SELECT 1", limit=1, timeout_s=sources.settings.timeout_s)
        return {
            "name": name,
            "ok": True,
            "tables": len(await connector.tables()),
            "elapsed_ms": round(result.elapsed_ms, 2),
        }

    out.print_json(json.dumps(with_sources(settings_from(config, profile, home), work)))


@db_app.command("schema")
def schema(
    name: str,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Show tables, columns, types, keys, comments, row counts and sample values."""

    async def work(sources: Any) -> list[Any]:
        connector = await sources.connector(name)
        return list(await connector.schema())

    tables = with_sources(settings_from(config, profile, home), work)
    if as_json:
        out.print_json(json.dumps([t.to_dict() for t in tables]))
        return
    for t in tables:
        out.print(f"[bold]{t.name}[/] ({t.row_count} rows){' -- ' + t.comment if t.comment else ''}")
        out.print(t.ddl(), markup=False, highlight=False)
        out.print()


@db_app.command("query")
def query(
    name: str,
    sql: str,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Run one read-only query (anything but a single SELECT is refused)."""

    async def work(sources: Any) -> Any:
        connector = await sources.connector(name)
        return await connector.run(sql, limit, sources.settings.timeout_s)

    result = with_sources(settings_from(config, profile, home), work)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    print_result(result)


def print_result(result: Any, max_rows: int = 30) -> None:
    from datapilot.datasource import jsonable

    table = Table(*result.columns)
    for row in result.rows[:max_rows]:
        table.add_row(*(str(jsonable(v)) for v in row))
    out.print(table)
    more = len(result.rows) - max_rows
    if more > 0 or result.truncated:
        out.print(f"[dim]{max(more, 0)} more rows not shown{'; cut at the row limit' if result.truncated else ''}[/]")


@db_app.command("remove")
def remove(name: str, config: ConfigOpt = None, profile: ProfileOpt = None, home: HomeOpt = None) -> None:
    """Unregister a data source (the data itself is not touched)."""

    async def work(sources: Any) -> None:
        await sources.remove(name)

    with_sources(settings_from(config, profile, home), work)
    out.print(f"removed {name}")


@db_app.command("values")
def values(
    name: str,
    question: Annotated[str | None, typer.Argument(help="a question: show the stored values it names")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="hits at most")] = 5,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Index a source's distinct text values (bounded, sampled); with QUESTION, the values it names."""
    from rich.text import Text

    from datapilot.cli._common import err
    from datapilot.cli._progress import step_progress
    from datapilot.text2sql import ValueIndex

    async def work(sources: Any) -> ValueIndex:
        connector = await sources.connector(name)
        with step_progress(err, f"indexing {name}") as update:
            return await ValueIndex.build(connector, progress=update)

    index = with_sources(settings_from(config, profile, home), work)
    hits = index.lookup(question, k) if question else []
    if as_json:
        body: dict[str, Any] = {"name": name, **index.summary()}
        if question:
            body |= {
                "q": question,
                "hits": [h.to_dict() for h in hits],
                "hints": [h.condition(index.dialect) for h in hits],
            }
        out.print_json(json.dumps(body))
        return
    out.print(f"{name}: {index.values} values in {index.columns} columns ({index.rows_read} rows read)")
    for skipped in index.skipped:
        out.print(f"skipped {skipped}", style="dim", markup=False, highlight=False)
    if question:
        table = Table("score", "table", "column", "value", "matched")
        for h in hits:
            table.add_row(f"{h.score:.2f}", *(Text(v) for v in (h.table, h.column, h.value, h.matched)))
        out.print(table if hits else "[dim]no stored value found in the question[/]")
