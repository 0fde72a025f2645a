"""Progress display for model preparation and loading, and for jobs of counted steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@contextmanager
def step_progress(console: Console, label: str) -> Iterator[Callable[[int, int, str], None]]:
    """One bar for a job of counted steps: ``update(done, total, step)`` after each (columns read...)."""
    columns = (
        SpinnerColumn(),
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[dim]{task.description}[/]"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None)

        def update(done: int, total: int, step: str) -> None:
            progress.update(task, description=step, completed=done, total=total or None)

        yield update
