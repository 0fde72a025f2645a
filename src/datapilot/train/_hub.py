"""``preprocess_sft_data``, ``start_sft`` and ``start_predict``: DB-GPT-Hub's entry points.

``preprocess_sft_data(data_folder, data_info)`` reads Spider-format sets (``data_folder/<data_source>/``:
question files, ``tables.json``, ``database/<db_id>/<db_id>.sqlite``) and writes SFT records
(``db_id``, ``instruction``, ``input``, ``output``, ``history``) to
``data_folder/example_text2sql_train.json`` and ``..._dev.json``, plus each entry's ``train_output`` and
``dev_output`` and a ``dataset_info.json``, as the reference does. The instruction and input are the
text-to-SQL pipeline's own prompt for the question (value hints included, in the ``trained`` form: no
worked examples, no sample values), so a model trained on them reads the same prompt when the
pipeline later asks it; the reference's free-text schema description is not used.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ModelInfo, ModelOutput, ModelRequest
from datapilot.train._args import DataInfo, PredictArgs, TrainArgs, parse
from datapilot.train._sft import META_FILE, TrainProgress, TrainResult, render, train

TRAIN_FILE = "example_text2sql_train.json"
DEV_FILE = "example_text2sql_dev.json"
QUESTION_MARK = "-- Question:"
VALUES_MARK = "-- Values in the next question:"
_last_folder: list[Path] = []  # the data folder preprocess_sft_data wrote last: start_sft's default


class _NoModel:
    """The pipeline's model client while only prompts are written: asking it is a bug."""

    async def generate(self, request: ModelRequest) -> ModelOutput:
        raise RuntimeError("no model while writing prompts")

    def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        raise RuntimeError("no model while writing prompts")

    async def models(self) -> list[ModelInfo]:
        return []


def split_prompt(prompt: str) -> tuple[str, str]:
    """(instruction, input): the schema preamble, the same for every question of a database, then the
    value hints, the question and ``SELECT``."""
    for mark in (VALUES_MARK, QUESTION_MARK):
        head, sep, tail = prompt.rpartition(mark)
        if sep:
            return head, sep + tail
    return "", prompt


async def pipeline_records(
    items: Sequence[Mapping[str, Any]], db_path: Path, db_id: str, question_key: str = "question"
) -> list[dict[str, Any]]:
    """SFT records for ``items`` (``question``, ``query``) over one SQLite database."""
    from datapilot.datasource import SQLAlchemyConnector
    from datapilot.text2sql import Grounding, Text2SQL, Text2SQLOptions, ValueIndex

    connector = SQLAlchemyConnector(f"sqlite:///{db_path}")
    try:
        index = await ValueIndex.build(connector)
        pipe = Text2SQL(
            _NoModel(), "", connector, options=Text2SQLOptions(trained=True), grounding=Grounding(db_id, values=index)
        )
        out = []
        for item in items:
            prompt = await pipe.prompt_for(str(item[question_key]))
            assert isinstance(prompt, str)
            instruction, inp = split_prompt(prompt)
            query = re.sub(r"\s+", " ", str(item["query"])).strip()
            out.append({"db_id": db_id, "instruction": instruction, "input": inp, "output": query, "history": []})
        return out
    finally:
        await connector.close()


def _load_items(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InvalidRequestError(f"{path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise InvalidRequestError(f"{path} is not a JSON list of questions")
    return data


async def _records_for(folder: Path, info: DataInfo, files: list[str]) -> list[dict[str, Any]]:
    from datapilot.text2sql import database_path

    items: list[dict[str, Any]] = []
    for name in files:
        items += _load_items(folder / name)
    by_db: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if info.is_multiple_turn:
            raise InvalidRequestError("is_multiple_turn: multi-turn text-to-SQL (SParC, CoSQL) is not supported")
        db_id = str(item[info.db_id_name])
        by_db.setdefault(db_id, []).append(item)
    out: list[dict[str, Any]] = []
    for db_id, chunk in by_db.items():
        db = database_path(folder / info.database_dir, db_id)
        if not db.is_file():
            raise InvalidRequestError(f"no database for {db_id!r}: expected {db}")
        out += await pipeline_records(chunk, db, db_id)
    return out


def preprocess_sft_data(data_folder: str | Path, data_info: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """Spider-format sets -> SFT records; returns the paths written (``train``, ``dev``, ...)."""
    folder = Path(data_folder)
    if not folder.is_dir():
        raise InvalidRequestError(f"data_folder {folder} is not a folder")
    infos = [parse(DataInfo, entry, "data_info entry") for entry in data_info]
    if not infos:
        raise InvalidRequestError("data_info is empty: name at least one data source")

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Path]]:
        train_all: list[dict[str, Any]] = []
        dev_all: list[dict[str, Any]] = []
        written: dict[str, Path] = {}
        for info in infos:
            source = folder / info.data_source
            if not (source / info.tables_file).is_file():
                raise InvalidRequestError(f"{source / info.tables_file} does not exist (tables_file)")
            train_part = await _records_for(source, info, info.train_file)
            dev_part = await _records_for(source, info, info.dev_file)
            for name, part in ((info.train_output, train_part), (info.dev_output, dev_part)):
                if name:
                    written[name] = _write(folder / name, part)
            train_all += train_part
            dev_all += dev_part
        return train_all, dev_all, written

    train_records, dev_records, written = asyncio.run(run())
    written["train"] = _write(folder / TRAIN_FILE, train_records)
    written["dev"] = _write(folder / DEV_FILE, dev_records)
    info_file = folder / "dataset_info.json"
    info_file.write_text(
        json.dumps(
            {
                "example_text2sql_train": {"file_name": TRAIN_FILE},
                "example_text2sql_dev": {"file_name": DEV_FILE},
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    written["dataset_info"] = info_file
    _last_folder[:] = [folder]
    return written


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def start_sft(train_args: Mapping[str, Any], *, progress: TrainProgress | None = None) -> TrainResult:
    """Fine-tune as DB-GPT-Hub's ``start_sft``; ``dataset`` is looked up in ``dataset_dir``, else in the
    folder ``preprocess_sft_data`` wrote last, else the working folder."""
    args: TrainArgs = parse(TrainArgs, train_args, "train_args")
    if not args.dataset_dir and _last_folder:
        args.dataset_dir = str(_last_folder[0])
    return train(args, progress=progress)


# ---------------------------------------------------------------- prediction


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.split(";")[0]).strip()


def start_predict(predict_args: Mapping[str, Any], *, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write one SQL per line for each record of ``predict_file_path``; returns the file written.
    A fine-tuned GGUF base runs on llama.cpp with the adapter applied (as it is served); other models
    run on transformers (+ peft)."""
    args: PredictArgs = parse(PredictArgs, predict_args, "predict_args")
    args.check()
    records = json.loads(Path(args.predict_file_path).read_text(encoding="utf-8"))
    if not isinstance(records, list) or not records:
        raise InvalidRequestError(f"{args.predict_file_path} holds no records to predict")
    meta: dict[str, Any] = {}
    if args.checkpoint_dir and (Path(args.checkpoint_dir) / META_FILE).is_file():
        meta = json.loads((Path(args.checkpoint_dir) / META_FILE).read_text(encoding="utf-8"))
    template = args.template or meta.get("template", "datapilot")
    generate = _llama_generator(args, meta) or _hf_generator(args, meta)
    out_dir = Path(args.predict_out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, rec in enumerate(records):
        prompt, _ = render(template, rec)
        text = generate(prompt, args.max_new_tokens)
        sql = _clean(("SELECT" + text) if template == "datapilot" and prompt.rstrip().endswith("SELECT") else text)
        lines.append(sql or "SELECT")
        if progress:
            progress(i + 1, len(records))
    path = out_dir / args.predicted_out_filename
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _llama_generator(args: PredictArgs, meta: Mapping[str, Any]) -> Callable[[str, int], str] | None:
    from datapilot.train._sft import ADAPTER_GGUF, resolve_base

    gguf: Path | None
    if meta.get("gguf"):
        gguf = Path(meta["gguf"])
    elif args.model_name_or_path:
        gguf = resolve_base(args.model_name_or_path)[1]
    else:
        gguf = None
    if gguf is None or not gguf.is_file():
        return None
    adapter = Path(args.checkpoint_dir) / ADAPTER_GGUF if args.checkpoint_dir else None
    if args.checkpoint_dir and (adapter is None or not adapter.is_file()):
        return None  # a checkpoint without a GGUF adapter: transformers + peft
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    import os

    kwargs: dict[str, Any] = {"n_ctx": 4096, "verbose": False, "n_threads": args.threads or os.cpu_count() or 1}
    if adapter is not None:
        kwargs["lora_path"] = str(adapter)
    llm = Llama(str(gguf), **kwargs)

    def generate(prompt: str, max_tokens: int) -> str:
        out: Any = llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=args.temperature, stop=[";", "\n\n"]
        )
        return str(out["choices"][0]["text"])

    return generate


def _hf_generator(args: PredictArgs, meta: Mapping[str, Any]) -> Callable[[str, int], str]:
    from datapilot.train._sft import load_base, quiet_peft

    base = load_base(str(meta.get("base") or args.model_name_or_path))
    model = base.model
    if args.checkpoint_dir and args.finetuning_type != "full":
        from peft import PeftModel

        with quiet_peft():
            model = PeftModel.from_pretrained(model, args.checkpoint_dir)
    elif args.checkpoint_dir:
        model = load_base(args.checkpoint_dir).model
    model.eval()
    tok = base.tokenizer

    def generate(prompt: str, max_tokens: int) -> str:
        import torch

        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        return str(tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True))

    return generate
