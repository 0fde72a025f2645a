"""``datapilot train text2sql --db NAME``: the whole chain, from a data source to a served model.

1. **Data**: question -> SQL pairs generated from the data source's real schema and values
   (``generate_pairs``), its verified examples added, every question of the shipped evaluation sets
   (and of ``exclude``) removed, split into train and dev by SQL, written in Spider's layout.
2. **Records**: ``preprocess_sft_data`` turns them into the pipeline's own prompts.
3. **Fine-tune**: LoRA on the base model's own GGUF weights, within a time or step budget, with
   checkpoints (``resume``) and the loss curve.
4. **Serve**: the adapter as a GGUF LoRA file, registered as a new llama.cpp model
   (``HOME/models/trained/<name>/model.json``): it appears in ``/v1/models`` and the UI's picker, and the
   pipeline prompts it as it was trained.
5. **Compare**: the base model and the fine-tuned one answer the generated dev questions through the
   same pipeline; EX by difficulty for both is printed and recorded (``baseline.show_scores``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datapilot.core.config import TRAINED_MODELS_DIR, ModelConfig, Settings
from datapilot.core.errors import ConfigError, InvalidRequestError
from datapilot.train._sft import TrainResult

if TYPE_CHECKING:
    from datapilot.datasource import DataSources
    from datapilot.text2sql import EvalReport

# SmolLM2-135M trains about six times faster than Gemma 3 270M on these CPUs and answers better before
# training (shipped dev EX 16/65 vs 13/65), so it is the default base.
DEFAULT_BASE = "smollm2-135m-instruct"
# (done, total, what)
StepProgress = Callable[[int, int, str], None]


@dataclass(slots=True)
class ChainOptions:
    db: str
    model: str = DEFAULT_BASE
    name: str | None = None  # the registered model's name; default <model>-<db>-sql
    minutes: float = 0.0
    steps: int = 0
    epochs: float = 3.0
    max_pairs: int = 2000
    phrasings: int = 3
    languages: tuple[str, ...] = ("en", "zh")
    seed: int = 0
    dev_share: float = 0.1
    exclude: list[Path] = field(default_factory=list)  # question sets never trained on, besides the shipped ones
    compare: bool = True
    compare_questions: int = 60  # dev questions both models answer for the before/after figure
    resume: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    learning_rate: float = 5e-4
    batch_size: int = 8
    threads: int = 0

    @property
    def model_name(self) -> str:
        return self.name or f"{self.model}-{self.db}-sql"


@dataclass(slots=True)
class DataRun:
    folder: Path  # Spider layout: train.json, dev.json, tables.json, database/
    train: int
    dev: int
    dropped: int  # pairs removed because an evaluation set asks them
    verified: int  # the data source's verified examples added


def run_folder(settings: Settings, name: str) -> Path:
    return settings.home / TRAINED_MODELS_DIR / name


def shipped_questions() -> list[tuple[str, str]]:
    """(question, gold SQL) of every shipped evaluation set: never trained on."""
    from datapilot.text2sql import dev_set_path, heldout_set_path, load_questions, unseen_set_path

    out: list[tuple[str, str]] = []
    for path in (dev_set_path(), heldout_set_path(), unseen_set_path()):
        out += [(q.question, q.query) for q in load_questions(path)]
    return out


async def make_data(
    settings: Settings, sources: DataSources, opts: ChainOptions, folder: Path, progress: StepProgress | None = None
) -> DataRun:
    from datapilot.text2sql import load_questions
    from datapilot.train._generate import (
        check_no_leakage,
        export_sqlite,
        generate_pairs,
        split_pairs,
        write_spider,
    )

    config = sources.get(opts.db)
    connector = await sources.connector(opts.db)
    schema = await connector.schema()
    if not schema:
        raise InvalidRequestError(f"data source {opts.db!r} has no tables: there is nothing to train on")

    def gen_progress(done: int, total: int) -> None:
        if progress:
            progress(done, total, "writing and checking SQL")

    pairs = await generate_pairs(
        connector,
        opts.db,
        seed=opts.seed,
        max_pairs=opts.max_pairs,
        phrasings=opts.phrasings,
        languages=opts.languages,
        progress=gen_progress,
    )
    verified = _verified_pairs(settings, opts.db, connector.dialect)
    pairs = [*verified, *pairs]
    evaluation = shipped_questions()
    for path in opts.exclude:
        evaluation += [(q.question, q.query) for q in load_questions(path)]
    before = len(pairs)
    pairs = check_no_leakage(pairs, [q for q, _ in evaluation], [s for _, s in evaluation])
    if not pairs:
        raise InvalidRequestError(f"no training pairs could be written for {opts.db!r}: add verified examples")
    train, dev = split_pairs(pairs, opts.dev_share, opts.seed)
    if config.kind == "sqlite" and config.path:
        sqlite_path = Path(config.path)
    else:  # Spider's layout holds a SQLite database: a bounded copy of the source's tables
        sqlite_path = await export_sqlite(connector, folder / "export" / f"{opts.db}.sqlite", schema=schema)
    write_spider(folder, opts.db, train, dev, schema, sqlite_path)
    return DataRun(folder, len(train), len(dev), before - len(pairs), len(verified))


def _verified_pairs(settings: Settings, source: str, dialect: str) -> list[Any]:
    """The data source's verified examples as training pairs."""
    from datapilot.text2sql import ExampleStore, difficulty_of
    from datapilot.train._generate import Pair

    path = settings.home / "examples.db"
    if not path.is_file():
        return []
    store = ExampleStore.at_home(settings.home)
    try:
        out = []
        for e in store.list(source, verified=True):
            language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in e.question) else "en"
            out.append(Pair(e.question, e.sql, source, language, "verified", difficulty_of(e.sql)))
        return out
    finally:
        store.close()


def train_args(opts: ChainOptions, base_path: str, records: Path, out: Path) -> dict[str, Any]:
    """``start_sft``'s arguments for the chain (DB-GPT-Hub's keys)."""
    return {
        "model_name_or_path": base_path,
        "dataset": str(records),
        "finetuning_type": "lora",
        "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "lora_rank": opts.lora_rank,
        "lora_alpha": opts.lora_alpha,
        "template": "datapilot",
        "max_source_length": 3072,
        "max_target_length": 256,
        "per_device_train_batch_size": opts.batch_size,
        "gradient_accumulation_steps": 1,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03,
        "learning_rate": opts.learning_rate,
        "num_train_epochs": opts.epochs,
        "max_steps": opts.steps if opts.steps > 0 else -1,
        "max_minutes": opts.minutes,
        "logging_steps": 5,
        "save_steps": 50,
        "output_dir": str(out),
        "overwrite_output_dir": not opts.resume,
        "resume_from_checkpoint": True if opts.resume else None,
        "plot_loss": True,
        "seed": opts.seed,
        "threads": opts.threads,
    }


def register(
    settings: Settings, opts: ChainOptions, base: ModelConfig, base_gguf: Path, result: TrainResult
) -> ModelConfig:
    """Write ``model.json`` for the fine-tuned model beside its adapter; it is served from then on."""
    if result.adapter_gguf is None:
        raise ConfigError("the training wrote no GGUF adapter: the base model must be a GGUF file")
    params = {k: v for k, v in base.params.items() if k not in ("lora_path", "trained_for")}
    params.update({"lora_path": str(result.adapter_gguf), "trained_for": [opts.db], "base_model": base.name})
    config = ModelConfig(name=opts.model_name, backend="llama_cpp", path=str(base_gguf), params=params)
    folder = result.output_dir
    (folder / "model.json").write_text(config.model_dump_json(indent=2, exclude_none=True), encoding="utf-8")
    return config


def use_for_source(settings: Settings, db: str, model: str) -> None:
    """Make ``model`` the data source's ``sql_model``: its questions go to it unless a request names another."""
    from datapilot.datasource import DataSourceStore

    store = DataSourceStore.for_settings(settings.data, settings.home)
    try:
        config = store.get(db)
        if config is None:
            raise InvalidRequestError(f"no data source named {db!r}")
        store.add(config.model_copy(update={"sql_model": model}), replace=True)
    finally:
        store.close()


async def compare(
    settings: Settings,
    base: ModelConfig,
    tuned: ModelConfig,
    data: Path,
    db_id: str,
    n: int,
    seed: int,
    progress: StepProgress | None = None,
) -> dict[str, EvalReport]:
    """EX of the base and of the fine-tuned model on (up to ``n`` of) the generated dev questions,
    through the same pipeline, each prompted the way it expects."""
    from datapilot.models.manager import ModelManager
    from datapilot.text2sql import PipelineRunner, Text2SQLOptions, load_questions

    items = load_questions(data / "dev.json")
    if len(items) > n:
        items = random.Random(seed).sample(items, n)
    reports: dict[str, EvalReport] = {}
    for cfg, trained in ((base, False), (tuned, True)):
        manager = ModelManager([cfg], settings.home)
        await manager.start()
        try:
            options = Text2SQLOptions(
                max_corrections=settings.data.max_corrections,
                row_limit=settings.data.row_limit,
                timeout_s=settings.data.timeout_s,
                trained=trained,
            )
            seen = [0]

            def step(_: Any, seen: list[int] = seen, label: str = cfg.name) -> None:
                seen[0] += 1
                if progress:
                    progress(seen[0], len(items), label)

            async with PipelineRunner(manager, cfg.name) as runner:
                reports[cfg.name] = await runner.run(
                    items, data / "database", options, progress=step, timeout_s=settings.data.timeout_s
                )
        finally:
            await manager.close()
    return reports


def report_rows(reports: dict[str, EvalReport], dataset: str, methods: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for name, report in reports.items():
        by = report.by_difficulty()
        row: dict[str, Any] = {"model": name, "method": methods.get(name, "base"), "dataset": dataset, "etype": "exec"}
        for level in ("easy", "medium", "hard", "extra"):
            row[level] = round(by[level][2], 4) if level in by else None
        row["all"] = round(report.accuracy, 4)
        row["note"] = f"{report.correct}/{report.total}; executable {report.executable}/{report.total}"
        rows.append(row)
    return rows


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    path = folder / "summary.json"
    summary = {**summary, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


__all__ = [
    "DEFAULT_BASE",
    "ChainOptions",
    "DataRun",
    "compare",
    "make_data",
    "register",
    "report_rows",
    "run_folder",
    "train_args",
]
