"""Progress display for model preparation and loading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from datapilot.models.manager import LoadProgress


@contextmanager
def model_progress(console: Console, names: list[str]) -> Iterator[LoadProgress]:
    """A bar per model: file assembly in bytes, then loading (indeterminate), then ready/failed."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[model]}[/]"),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {n: progress.add_task("waiting", model=n, total=None) for n in names}

        def update(name: str, step: str, done: int, total: int) -> None:
            progress.update(tasks[name], description=step, completed=done, total=total or None)

        yield update
