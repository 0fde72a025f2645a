"""``datapilot eval text2sql``: execution accuracy of a model on Spider-format questions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, err, out, settings_from
from datapilot.core.errors import DataPilotError

eval_app = typer.Typer(help="Evaluations.", no_args_is_help=True)


class EvalSet(StrEnum):
    """The shipped question sets: ``dev`` is tuned on, ``heldout`` never is."""

    dev = "dev"
    heldout = "heldout"


def _shipped_set(name: EvalSet) -> tuple[Path, Callable[[Path], object]]:
    """A shipped set's questions, and what builds its databases under a folder in Spider's layout."""
    from datapilot.datasource import build_sample_database
    from datapilot.text2sql import dev_set_path, ensure_heldout_database, heldout_set_path

    sets: dict[EvalSet, tuple[Path, Callable[[Path], object]]] = {
        # The sample database is rebuilt every run, as it always was; the clinic one only when missing or outdated.
        EvalSet.dev: (dev_set_path(), lambda folder: build_sample_database(folder / "sample" / "sample.sqlite")),
        EvalSet.heldout: (heldout_set_path(), ensure_heldout_database),
    }
    return sets[name]


@eval_app.command("text2sql")
def text2sql(
    questions: Annotated[
        Path | None, typer.Option("--questions", "-q", help="Spider-format JSON [default: the questions of --set]")
    ] = None,
    question_set: Annotated[
        EvalSet,
        typer.Option(
            "--set",
            help="shipped set: dev (the pipeline is tuned on it) or heldout (never tuned on; a clinic database)",
        ),
    ] = EvalSet.dev,
    db_dir: Annotated[
        Path | None,
        typer.Option(
            "--db-dir",
            help="folder of SQLite databases (DIR/db_id/db_id.sqlite or DIR/db_id.sqlite) "
            "[default: the databases of --set, built under HOME/eval]",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="chat model [default: the first one]")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV of every prediction")] = Path(
        "text2sql_predictions.csv"
    ),
    limit: Annotated[int | None, typer.Option(help="evaluate only the first N questions", min=1)] = None,
    style: Annotated[str, typer.Option(help="prompt style: completion or chat")] = "completion",
    corrections: Annotated[
        int | None, typer.Option(help="max corrections per question [default: configured]", min=0)
    ] = None,
    constrain: Annotated[
        bool,
        typer.Option("--constrain/--no-constrain", help="constrain the SQL by the schema's grammar when the model can"),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Generate SQL for each question and report execution accuracy (EX), overall and by difficulty."""
    from datapilot.cli._progress import model_progress
    from datapilot.cli.chat import chat_model_name
    from datapilot.datasource import SQLAlchemyConnector
    from datapilot.models.manager import ModelManager
    from datapilot.text2sql import Question, Text2SQL, Text2SQLOptions, evaluate, load_questions

    settings = settings_from(config, profile, home)
    set_questions, build_databases = _shipped_set(question_set)
    questions = questions or set_questions
    items = load_questions(questions)[:limit]
    if not items:
        raise DataPilotError("no questions to evaluate")
    if db_dir is None:
        db_dir = settings.home / "eval"
        build_databases(db_dir)
    name = chat_model_name(settings, model)
    cfg = settings.model(name)
    if cfg is None:
        raise DataPilotError(f"model {name!r} is not configured")
    options = Text2SQLOptions(
        style="chat" if style == "chat" else "completion",
        max_corrections=settings.data.max_corrections if corrections is None else corrections,
        row_limit=settings.data.row_limit,
        timeout_s=settings.data.timeout_s,
        constrain=constrain,
    )

    async def run() -> Any:
        manager = ModelManager([cfg], settings.home)
        connectors: dict[Path, SQLAlchemyConnector] = {}
        pipelines: dict[Path, Text2SQL] = {}
        with model_progress(err, [cfg.name]) as loading:
            await manager.start(loading)

        async def predict(q: Question, path: Path) -> tuple[str | None, int, str | None]:
            if path not in pipelines:
                connectors[path] = SQLAlchemyConnector(f"sqlite:///{path}")
                pipelines[path] = Text2SQL(manager, name, connectors[path], options=options)
            answer = await pipelines[path].answer(q.question)
            return answer.sql, len(answer.attempts), answer.error.message if answer.error else None

        columns = (
            TextColumn("[bold]text2sql[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=err) as progress:
                task = progress.add_task("EX -", total=len(items))
                seen = {"n": 0, "ok": 0}

                def step(p: Any) -> None:
                    seen["n"] += 1
                    seen["ok"] += int(p.correct)
                    progress.update(task, advance=1, description=f"EX {seen['ok'] / seen['n']:.1%}")

                return await evaluate(items, db_dir, predict, step)
        finally:
            for c in connectors.values():
                await c.close()
            await manager.close()

    report = asyncio.run(run())
    report.write_csv(output)
    summary = {"model": name, "questions": str(questions), **report.to_dict(), "csv": str(output)}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table("difficulty", "correct", "total", "EX")
    for difficulty, (correct, total, ex) in report.by_difficulty().items():
        table.add_row(difficulty, str(correct), str(total), f"{ex:.1%}")
    table.add_row("[bold]all[/]", str(report.correct), str(report.total), f"[bold]{report.accuracy:.1%}[/]")
    out.print(table)
    out.print(f"model {name}; predictions written to {output}")
