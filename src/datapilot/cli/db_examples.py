"""``datapilot db examples add|list|remove|import``: verified question -> SQL examples of a data source.

The examples live in the metadata store under --home, next to the data source definitions; a running
server sees them. An example is checked before it is kept: one read-only query that runs on its source.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, out, settings_from
from datapilot.core.config import Settings

if TYPE_CHECKING:
    from datapilot.datasource import DataSources
    from datapilot.text2sql import ExampleStore

T = TypeVar("T")

examples_app = typer.Typer(
    help="Verified question -> SQL examples of a data source, shown to the model: add, list, remove, import.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="the data source")]


def with_examples(settings: Settings, work: Callable[[DataSources, ExampleStore], Awaitable[T]]) -> T:
    from datapilot.datasource import DataSources
    from datapilot.text2sql import ExampleStore

    async def run() -> T:
        sources = DataSources(settings.data, settings.home)
        store = ExampleStore(sources.store.url)
        try:
            return await work(sources, store)
        finally:
            store.close()
            await sources.close()

    return asyncio.run(run())


@examples_app.command("add")
def add(
    name: NameArg,
    question: Annotated[str, typer.Option("--question", "-q", help="the question, as a person asks it")],
    sql: Annotated[str, typer.Option("--sql", "-s", help="the SQL that answers it (one read-only query)")],
    note: Annotated[str, typer.Option(help="why this example is right, or anything else to keep with it")] = "",
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Add a verified example (the SQL is run on the source first)."""

    async def work(sources: DataSources, store: ExampleStore) -> dict[str, Any]:
        connector = await sources.connector(name)
        added = await store.add(
            name, question, sql, note=note, connector=connector, timeout_s=sources.settings.timeout_s
        )
        return added.to_dict()

    out.print_json(json.dumps(with_examples(settings_from(config, profile, home), work)))


@examples_app.command("list")
def list_(
    name: NameArg,
    verified: Annotated[
        bool | None, typer.Option("--verified/--wrong", help="only the verified ones / only those rated wrong")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """List a data source's examples."""

    async def work(sources: DataSources, store: ExampleStore) -> list[dict[str, Any]]:
        sources.get(name)
        return [ex.to_dict() for ex in store.list(name, verified=verified)]

    rows = with_examples(settings_from(config, profile, home), work)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "verified", "question", "sql", "note")
    for r in rows:
        table.add_row(str(r["id"]), "yes" if r["verified"] else "wrong", r["question"], r["sql"], r["note"])
    out.print(table)
    if not rows:
        out.print(f"[dim]no examples for {name} yet: add one with `datapilot db examples add {name} -q ... -s ...`[/]")


@examples_app.command("remove")
def remove(
    name: NameArg,
    example_id: Annotated[int, typer.Argument(metavar="ID", help="the example's id (see `list`)")],
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Remove an example."""
    from datapilot.core.errors import NotFoundError

    async def work(sources: DataSources, store: ExampleStore) -> None:
        sources.get(name)
        if not store.remove(name, example_id):
            raise NotFoundError(f"data source {name!r} has no example {example_id}")

    with_examples(settings_from(config, profile, home), work)
    out.print(f"removed example {example_id} of {name}")


@examples_app.command("import")
def import_(
    name: NameArg,
    file: Annotated[
        Path,
        typer.Argument(
            help="JSON list of {question, sql}, Spider-format JSON (question, query), JSON Lines, or CSV "
            "with question and sql columns"
        ),
    ],
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Import verified examples from a file: all of them, or none when one fails its checks."""

    async def work(sources: DataSources, store: ExampleStore) -> int:
        connector = await sources.connector(name)
        added = await store.import_file(name, file, connector=connector, timeout_s=sources.settings.timeout_s)
        return len(added)

    count = with_examples(settings_from(config, profile, home), work)
    out.print(f"imported {count} example{'s' if count != 1 else ''} into {name}")
