"""``datapilot eval text2sql``: execution accuracy of a model on Spider-format questions, what its
wrong answers got wrong, its time per question, and (``--ablation``) what each pipeline stage adds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, err, out, settings_from
from datapilot.core.errors import DataPilotError

if TYPE_CHECKING:
    from datapilot.core.config import Settings
    from datapilot.models.manager import ModelManager
    from datapilot.text2sql import EvalReport, ExampleStore, PipelineRunner, Question, Text2SQLOptions

eval_app = typer.Typer(help="Evaluations.", no_args_is_help=True)


class EvalSet(StrEnum):
    """The shipped question sets: ``dev`` is tuned on, ``heldout`` never is."""

    dev = "dev"
    heldout = "heldout"
    # never tuned on: measures fine-tuning on a schema the project has never seen
    unseen = "unseen"


def _shipped_set(name: EvalSet) -> tuple[Path, Callable[[Path], object]]:
    """A shipped set's questions, and what builds its databases under a folder in Spider's layout."""
    from datapilot.datasource import build_sample_database
    from datapilot.text2sql import (
        dev_set_path,
        ensure_heldout_database,
        ensure_unseen_database,
        heldout_set_path,
        unseen_set_path,
    )

    sets: dict[EvalSet, tuple[Path, Callable[[Path], object]]] = {
        # The sample database is rebuilt every run, as it always was; the clinic one only when missing or outdated.
        EvalSet.dev: (dev_set_path(), lambda folder: build_sample_database(folder / "sample" / "sample.sqlite")),
        EvalSet.heldout: (heldout_set_path(), ensure_heldout_database),
        EvalSet.unseen: (unseen_set_path(), ensure_unseen_database),
    }
    return sets[name]


# The pipeline's stages that --ablation switches off in turn: Text2SQLOptions' boolean fields. A stage
# the installed pipeline lacks is skipped, so the command works with pipelines before and after it.
STAGES = ("constrain", "pick_examples", "values", "verified")
OPTIONAL_STAGES = ("values", "verified")  # newer than the others: set only where Text2SQLOptions has them
ALL_ON = "all_on"


def _ablation_runs(options: Text2SQLOptions) -> list[tuple[str, Text2SQLOptions]]:
    """The runs of an ablation: the options as given, then each stage that is on switched off, then
    one candidate instead of several."""
    runs = [(ALL_ON, options)]
    for stage in STAGES:
        if getattr(options, stage, False):
            off = replace(options)
            setattr(off, stage, False)
            runs.append((stage, off))
    if options.candidates > 1:
        runs.append(("candidates", replace(options, candidates=1)))
    return runs


def _stage_options(options: Text2SQLOptions) -> dict[str, Any]:
    shown = ("style", "max_corrections", *STAGES, "candidates")
    return {k: getattr(options, k) for k in shown if hasattr(options, k)}


@eval_app.command("text2sql")
def text2sql(
    questions: Annotated[
        Path | None, typer.Option("--questions", "-q", help="Spider-format JSON [default: the questions of --set]")
    ] = None,
    question_set: Annotated[
        EvalSet,
        typer.Option(
            "--set",
            help="shipped set: dev (the pipeline is tuned on it) or heldout (never tuned on; a clinic database)"
            " or unseen (never tuned on; a university database: measures fine-tuning on a schema the project has"
            " never seen)",
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
    pick_examples: Annotated[
        bool,
        typer.Option(
            "--pick-examples/--no-pick-examples",
            help="worked examples picked for each question (off: the fixed examples written from the schema)",
        ),
    ] = True,
    values: Annotated[
        bool, typer.Option("--values/--no-values", help="hints on the real values a question names")
    ] = True,
    verified: Annotated[
        bool, typer.Option("--verified/--no-verified", help="verified examples from the example store")
    ] = True,
    candidates: Annotated[
        int | None,
        typer.Option(help="answers written per question, execution deciding among them [default: 1]", min=1),
    ] = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            "--examples",
            help="verified question -> SQL pairs (Spider JSON with db_id, JSON or CSV) shown to the model and "
            "reused for repeated questions; never the questions evaluated",
        ),
    ] = None,
    ablation: Annotated[
        bool,
        typer.Option(
            "--ablation",
            help="run the set once as configured, then once with each stage off in turn "
            "(constrain, pick-examples, values, verified; one candidate when --candidates > 1), "
            "and report each stage's effect on EX",
        ),
    ] = False,
    png: Annotated[
        Path | None, typer.Option("--png", help="write a chart: EX by difficulty and language, error classes")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    ray: Annotated[
        bool | None,
        typer.Option(
            "--ray/--no-ray",
            help="spread the questions over Ray actors, each loading the model itself "
            "[default: on when the settings' runtime is ray]",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="the Ray cluster (implies --ray): auto, host:6379 or ray://host:10001 "
            "[default: the settings' ray.address, else a new local Ray]",
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            "--ray-workers",
            min=1,
            help="Ray actors (implies --ray) [default: the cluster's CPUs / the model's resources.num_cpus]",
        ),
    ] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Generate SQL for each question and report execution accuracy (EX) overall, by difficulty and by
    language, the share that ran, a class for each wrong answer, and the time per question.

    With --ray the questions are evaluated by Ray actors (the same pipeline and scoring, the same report);
    the databases of --db-dir must be at the same path on every node of a multi-machine cluster."""
    from datapilot.cli._progress import model_progress
    from datapilot.cli.chat import chat_model_name
    from datapilot.models.manager import ModelManager
    from datapilot.text2sql import (
        PipelineRunner,
        RayEvalRunner,
        Text2SQLOptions,
        ablation_rows,
        load_questions,
        write_chart,
    )

    settings = settings_from(config, profile, home)
    asked_ray = ray_address is not None or ray_workers is not None
    on_ray = ray if ray is not None else asked_ray or settings.runtime == "ray"
    if ray is False and asked_ray:
        raise DataPilotError("--ray-address and --ray-workers are for --ray, not --no-ray")
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
        pick_examples=pick_examples,
        trained=bool(cfg.params.get("trained_for")),  # a fine-tuned model reads the prompt it learnt from
    )
    if candidates is not None:
        options.candidates = candidates
    for stage, on in zip(OPTIONAL_STAGES, (values, verified), strict=True):
        if hasattr(options, stage):
            setattr(options, stage, on)
        elif not on:
            err.print(f"[yellow]this pipeline has no {stage!r} stage: --no-{stage} changes nothing[/]")
    runs = _ablation_runs(options) if ablation else [(ALL_ON, options)]
    already_off = [s for s in STAGES if hasattr(options, s) and not getattr(options, s)]
    base_label = "as configured" if already_off else "all on"

    store = _example_store(examples, items, db_dir, settings) if examples is not None else None

    async def run() -> list[tuple[str, EvalReport]]:
        manager: ModelManager | None = None
        runner: PipelineRunner | RayEvalRunner
        if on_ray:
            ray_settings = settings.ray.model_copy(update={"address": ray_address or settings.ray.address})
            runner = RayEvalRunner(
                cfg,
                settings.home,
                ray_settings,
                workers=ray_workers,
                examples_url=store.url if store is not None else None,
                embedder=settings.data.embedder if store is not None else None,
            )
            try:
                with err.status(f"placing {name} on Ray actors and loading it in each ..."):
                    await runner.start(len(items))
            except BaseException:
                await runner.close()
                raise
            nodes = len({p["node_id"] for p in runner.placed})
            err.print(f"{name} loaded on {len(runner.actors)} Ray actor(s) on {nodes} node(s)")
        else:
            manager = ModelManager([cfg], settings.home)
            with model_progress(err, [cfg.name]) as loading:
                await manager.start(loading)
            runner = PipelineRunner(manager, name, examples=store)

        columns = (
            TextColumn("[bold]text2sql[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        reports: list[tuple[str, EvalReport]] = []
        try:
            with Progress(*columns, console=err) as progress:
                for stage, opts in runs:
                    label = "" if not ablation else (f"{base_label} · " if stage == ALL_ON else f"no {stage} · ")
                    task = progress.add_task(f"{label}EX -", total=len(items))
                    seen = {"n": 0, "ok": 0}

                    def step(p: Any, task: Any = task, label: str = label, seen: dict[str, int] = seen) -> None:
                        seen["n"] += 1
                        seen["ok"] += int(p.correct)
                        progress.update(task, advance=1, description=f"{label}EX {seen['ok'] / seen['n']:.1%}")

                    report = await runner.run(items, db_dir, opts, progress=step, timeout_s=settings.data.timeout_s)
                    reports.append((stage, report))
            return reports
        finally:
            await runner.close()
            if manager is not None:
                await manager.close()
            if store is not None:
                store.close()

    reports = asyncio.run(run())
    report = reports[0][1]
    rows = ablation_rows(reports) if ablation else []
    report.write_csv(output)
    if png is not None:
        write_chart(png, report, rows)
    summary: dict[str, Any] = {
        "model": name,
        "questions": str(questions),
        "options": _stage_options(options),
        **report.to_dict(),
        "csv": str(output),
    }
    if png is not None:
        summary["png"] = str(png)
    if ablation:
        summary["ablation"] = rows
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False))
        return
    _print_report(report, rows, base_label, already_off)
    written = f"predictions written to {output}" + (f", chart to {png}" if png is not None else "")
    out.print(f"model {name}; {written}")


def _example_store(path: Path, items: list[Question], db_dir: Path, settings: Settings) -> ExampleStore:
    """The verified examples of ``path`` in a store of their own (a temporary file), checked against
    their databases; an example that repeats a question being evaluated is an error."""
    import tempfile

    from datapilot.retrieval import EmbedderContext, make_embedder
    from datapilot.text2sql import ExampleStore, database_path, read_examples

    asked = {q.question.strip().casefold() for q in items}
    pairs = read_examples(path)
    leaked = [p["question"] for p in pairs if str(p["question"]).strip().casefold() in asked]
    if leaked:
        raise DataPilotError(f"--examples holds {len(leaked)} question(s) being evaluated, e.g. {leaked[0]!r}")
    folder = Path(tempfile.mkdtemp(prefix="datapilot-eval-examples-"))
    store = ExampleStore.at_home(folder, embedder=make_embedder(settings.data.embedder, EmbedderContext(settings.home)))

    async def fill() -> None:
        from datapilot.datasource import SQLAlchemyConnector

        by_db: dict[str, list[dict[str, Any]]] = {}
        for p in pairs:
            by_db.setdefault(str(p.get("db_id") or items[0].db_id), []).append(p)
        for db_id, chunk in by_db.items():
            connector = SQLAlchemyConnector(f"sqlite:///{database_path(db_dir, db_id)}")
            try:
                await store.import_examples(db_id, chunk, connector=connector)
            finally:
                await connector.close()

    asyncio.run(fill())
    err.print(f"{len(pairs)} verified example(s) from {path}")
    return store


def _print_report(report: EvalReport, ablation: list[dict[str, Any]], base_label: str, already_off: list[str]) -> None:
    table = Table("", "correct", "total", "EX", title="execution accuracy")
    for difficulty, (correct, total, ex) in report.by_difficulty().items():
        table.add_row(difficulty, str(correct), str(total), f"{ex:.1%}")
    table.add_section()
    for language, (correct, total, ex) in report.by_language().items():
        table.add_row(language, str(correct), str(total), f"{ex:.1%}")
    table.add_section()
    table.add_row("[bold]all[/]", str(report.correct), str(report.total), f"[bold]{report.accuracy:.1%}[/]")
    table.add_row("executable", str(report.executable), str(report.total), f"{report.executable_share:.1%}")
    out.print(table)

    wrong = report.total - report.correct
    errors = Table("error class", "wrong", "share", title="wrong predictions")
    for error_class, n in report.errors().items():
        errors.add_row(error_class, str(n), f"{n / wrong:.0%}" if wrong else "-")
    out.print(errors)

    t = report.time_stats()
    out.print(
        f"time per question: median {t['median_s']:.2f} s, p90 {t['p90_s']:.2f} s, total {t['total_s']:.1f} s; "
        f"model calls per question {t['mean_attempts']:.2f}"
    )
    if ablation:
        caption = f"off in every run: {', '.join(already_off)}" if already_off else None
        stages = Table(
            "stage off", "EX", "executable", "median s/question", "ΔEX", title="stage effects", caption=caption
        )
        for row in ablation:
            delta = "" if row["stage"] == ALL_ON else f"{row['delta_ex']:+.1%}"
            stages.add_row(
                f"({base_label})" if row["stage"] == ALL_ON else row["stage"],
                f"{row['execution_accuracy']:.1%}",
                f"{row['executable_share']:.1%}",
                f"{row['median_s']:.2f}",
                delta,
            )
        out.print(stages)
