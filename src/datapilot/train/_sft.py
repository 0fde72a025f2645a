"""Supervised fine-tuning (LoRA or full) of a causal language model on SFT records, on CPU or GPU.

A record is DB-GPT-Hub's: ``instruction``, ``input``, ``output`` (and ``history``, unused for
single-turn text-to-SQL). The template turns it into a prompt and a target; the loss is computed on
the target's tokens only, and the output projection runs only at those positions (the vocabulary of
the embedded Gemma is 262k: projecting every prompt position would cost more than the model).

Records that share their prompt's first part (the schema preamble of one database) are trained in
groups: the shared prefix runs once per group and every record's remainder attends to its keys and
values, so a batch of B questions costs one schema plus B questions instead of B schemas.

The base model is a Hugging Face folder or a GGUF file (dequantised by ``transformers``), so the
embedded models train from the very files that serve them. Checkpoints hold the adapter, the optimiser
and the position in the data; ``resume_from_checkpoint`` continues from one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datapilot.core.errors import ConfigError, InvalidRequestError, MissingDependencyError
from datapilot.train._args import TrainArgs

log = logging.getLogger(__name__)

# (optimiser steps done, steps planned, the last logged loss)
TrainProgress = Callable[[int, int, float | None], None]
STATE_FILE = "trainer_state.json"
META_FILE = "datapilot_train.json"
ADAPTER_GGUF = "adapter.gguf"


@dataclass(slots=True)
class Base:
    model: Any
    tokenizer: Any
    source: str  # what was loaded: a GGUF file, a folder or a hub id
    gguf: Path | None  # the GGUF file the model came from, when it did


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "hf") from None
    return torch


def resolve_base(name_or_path: str, home: Path | None = None) -> tuple[str, Path | None]:
    """(what to load, its GGUF file if any): a GGUF file, a model folder, or a DataPilot model's name
    (its GGUF, from its path or package), else a Hugging Face id."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise InvalidRequestError(f"{path} is a file but not a GGUF model", param="model_name_or_path")
        return str(path), path
    if path.is_dir():
        return str(path), None
    from datapilot.core.config import load_settings
    from datapilot.models.assets import resolve_model_path

    settings = load_settings()
    config = settings.model(name_or_path)
    if config is not None:
        found = resolve_model_path(config, home or settings.home)
        if found is None:
            raise InvalidRequestError(
                f"model {name_or_path!r} is a proxy to a remote endpoint: there are no weights here to train",
                param="model_name_or_path",
            )
        return str(found), found if found.suffix == ".gguf" else None
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        return name_or_path, None  # a Hugging Face id, from the local cache
    raise InvalidRequestError(
        f"model_name_or_path {name_or_path!r} is neither a file, a folder nor a configured model "
        "(`datapilot model list` shows the configured ones)",
        param="model_name_or_path",
    )


def load_base(name_or_path: str, *, home: Path | None = None, dtype: str = "float32") -> Base:
    torch = _torch()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "hf") from None
    from transformers.utils import logging as hf_logging

    # Its per-tensor progress bars and deprecation notes would scroll over the training's own progress.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source, gguf = resolve_base(name_or_path, home)
    kwargs: dict[str, Any] = {}
    folder = source
    if gguf is not None:
        folder, kwargs["gguf_file"] = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not load {source} with transformers: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Base(model, tokenizer, source, gguf)


# ---------------------------------------------------------------- templates


def render(template: str, record: dict[str, Any], eos: str = "") -> tuple[str, str]:
    """(prompt, target) of an SFT record under ``template``."""
    prompt = f"{record.get('instruction', '')}{record.get('input', '')}"
    output = str(record.get("output", ""))
    if template == "datapilot":
        # The pipeline's completion prompt ends with the answer's first word ("SELECT"); the target is
        # the rest, closed by the statement's ";" (a stop string of the pipeline).
        if prompt.rstrip().endswith("SELECT") and output.lstrip().upper().startswith("SELECT"):
            output = output.lstrip()[len("SELECT") :]
            output = output if output.startswith((" ", "\n")) else " " + output
        output = output.rstrip().rstrip(";") + ";"
        return prompt, output
    if template == "llama2":
        return f"[INST] {prompt.strip()} [/INST] ", output + eos
    if template == "chatml":
        return f"<|im_start|>user\n{prompt.strip()}<|im_end|>\n<|im_start|>assistant\n", output + "<|im_end|>"
    if template == "gemma":
        return f"<start_of_turn>user\n{prompt.strip()}<end_of_turn>\n<start_of_turn>model\n", output + "<end_of_turn>"
    return f"{prompt.strip()}\n", output + eos  # "default"


@dataclass(slots=True)
class Sample:
    prefix: list[int]  # the part of the prompt shared with other samples of its group
    rest: list[int]  # the rest of the prompt, then the target
    target_from: int  # index in ``rest`` where the target starts


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def tokenize(
    records: Sequence[dict[str, Any]], tokenizer: Any, template: str, max_source: int, max_target: int
) -> tuple[list[Sample], int]:
    """Samples, and how many records were skipped (prompt longer than ``max_source``, or no target).
    The prefix of a sample is its instruction's tokens (for the ``datapilot`` template: the schema
    preamble), cut back to what its neighbours with the same instruction share."""
    eos = tokenizer.eos_token or ""
    out: list[Sample] = []
    skipped = 0
    prefix_ids: dict[str, list[int]] = {}
    for rec in records:
        prompt, target = render(template, rec, eos)
        p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        t_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target]
        if len(p_ids) > max_source or not t_ids:
            skipped += 1
            continue
        instr = str(rec.get("instruction", ""))
        if template == "datapilot" and instr:
            shared = prefix_ids.get(instr)
            if shared is None:
                shared = prefix_ids[instr] = tokenizer(instr, add_special_tokens=True)["input_ids"]
            cut = _common_prefix(shared, p_ids)
            cut = max(0, cut - 1)  # leave a token: a tokenizer may merge across the seam
        else:
            cut = 0
        out.append(Sample(p_ids[:cut], p_ids[cut:] + t_ids, len(p_ids) - cut))
    return out, skipped


def batches(samples: Sequence[Sample], size: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices of samples in batches: shuffled per epoch, each batch from one prefix group."""
    rng = random.Random(seed * 1000 + epoch)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(tuple(s.prefix), []).append(i)
    out: list[list[int]] = []
    for members in groups.values():
        rng.shuffle(members)
        out += [members[i : i + size] for i in range(0, len(members), size)]
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------- the loss


def _decoder_and_head(model: Any) -> tuple[Any, Any, float | None]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    cap = getattr(inner.config, "final_logit_softcapping", None)
    return decoder, inner.get_output_embeddings(), cap


def batch_loss(model: Any, batch: Sequence[Sample], pad_id: int) -> Any:
    """Mean cross-entropy over the batch's target tokens; the shared prefix runs once."""
    torch = _torch()
    decoder, head, cap = _decoder_and_head(model)
    device = next(model.parameters()).device
    prefix = batch[0].prefix
    n = len(batch)
    past = None
    if prefix:
        ids = torch.tensor([prefix], device=device)
        first = decoder(input_ids=ids, use_cache=True)
        past = getattr(first, "past_key_values", None) or getattr(first, "cache", None)
        if past is None:
            raise ConfigError("the model returned no key/value cache: it cannot share a prefix")
        if n > 1:
            past.batch_repeat_interleave(n)
    width = max(len(s.rest) for s in batch)
    ids = torch.full((n, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((n, len(prefix) + width), dtype=torch.long, device=device)
    mask[:, : len(prefix)] = 1
    for i, s in enumerate(batch):
        ids[i, : len(s.rest)] = torch.tensor(s.rest, device=device)
        mask[i, len(prefix) : len(prefix) + len(s.rest)] = 1
    positions = torch.arange(len(prefix), len(prefix) + width, device=device).unsqueeze(0).expand(n, -1)
    hidden = decoder(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=past is not None,
        **_cache_kw(decoder, past),
    ).last_hidden_state
    # Position t predicts token t+1: the target's tokens are predicted from the one before each.
    rows, cols, labels = [], [], []
    for i, s in enumerate(batch):
        for t in range(max(s.target_from, 1), len(s.rest)):
            rows.append(i)
            cols.append(t - 1)
            labels.append(s.rest[t])
        if s.target_from == 0 and prefix:  # the target starts right after the prefix (no rest of prompt)
            raise InvalidRequestError("a sample's target starts inside its shared prefix")
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    logits = head(picked).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, torch.tensor(labels, device=device))


def _cache_kw(decoder: Any, past: Any) -> dict[str, Any]:
    """The cache argument under this transformers version's name (``cache`` since 5.x)."""
    import inspect

    params = inspect.signature(decoder.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": past}


# ---------------------------------------------------------------- schedules


@dataclass(slots=True)
class Plan:
    total: int  # optimiser steps planned; revised when only a time budget bounds the run
    warmup: int = 0


def lr_factor(kind: str, step: int, plan: Plan) -> float:
    if plan.warmup and step < plan.warmup:
        return (step + 1) / plan.warmup
    if kind in ("constant", "constant_with_warmup"):
        return 1.0
    done = min(1.0, (step - plan.warmup) / max(1, plan.total - plan.warmup))
    if kind in ("linear", "polynomial"):
        return max(0.0, 1.0 - done)
    return 0.5 * (1.0 + math.cos(math.pi * done))  # cosine; cosine_with_restarts with one cycle


# ---------------------------------------------------------------- training


@dataclass(slots=True)
class TrainResult:
    output_dir: Path
    steps: int
    samples: int
    skipped: int
    seconds: float
    samples_per_s: float
    first_loss: float | None
    last_loss: float | None
    losses: list[tuple[int, float]] = field(default_factory=list)
    adapter_gguf: Path | None = None
    stopped: str = "finished"  # finished | max_steps | max_minutes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_dir"] = str(self.output_dir)
        d["adapter_gguf"] = str(self.adapter_gguf) if self.adapter_gguf else None
        return d


def _prepare_model(base: Base, args: TrainArgs) -> Any:
    model = base.model
    if args.finetuning_type == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MissingDependencyError("peft", "train") from None
    targets: str | list[str] = "all-linear" if args.targets == ["all"] else args.targets
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if isinstance(targets, list):
        missing = [t for t in targets if t not in names]
        if missing:
            raise InvalidRequestError(
                f"lora_target {', '.join(missing)} not in the model (its layers include: "
                f"{', '.join(sorted(n for n in names if n.endswith('_proj')))})",
                param="lora_target",
            )
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with quiet_peft():
        return get_peft_model(model, config)


def read_records(args: TrainArgs) -> list[dict[str, Any]]:
    """The SFT records named by ``dataset`` (comma-separated): files, or ``<name>.json`` in ``dataset_dir``."""
    out: list[dict[str, Any]] = []
    for name in [d.strip() for d in args.dataset.split(",") if d.strip()]:
        path = Path(name)
        if not path.is_file():
            folder = Path(args.dataset_dir) if args.dataset_dir else Path.cwd()
            path = folder / (name if name.endswith(".json") else f"{name}.json")
        if not path.is_file():
            raise InvalidRequestError(
                f"dataset {name!r} not found (looked for {path}): run preprocess_sft_data, or set dataset_dir",
                param="dataset",
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(r, dict) and "output" in r for r in data):
            raise InvalidRequestError(f"{path} is not a list of SFT records (instruction, input, output)")
        out += data
    if not out:
        raise InvalidRequestError("the dataset has no records: nothing to train on", param="dataset")
    return out


def _checkpoints(folder: Path) -> list[Path]:
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def train(
    args: TrainArgs,
    records: Sequence[dict[str, Any]] | None = None,
    *,
    base: Base | None = None,
    progress: TrainProgress | None = None,
    home: Path | None = None,
) -> TrainResult:
    """Fine-tune per ``args`` (validated) on ``records`` (default: read from ``args.dataset``)."""
    torch = _torch()
    args.check()
    out_dir = Path(args.output_dir)
    busy = out_dir.is_dir() and any(out_dir.iterdir())
    if busy and not args.overwrite_output_dir and not args.resume_from_checkpoint:
        raise InvalidRequestError(
            f"output_dir {out_dir} is not empty: set overwrite_output_dir, or resume_from_checkpoint",
            param="output_dir",
        )
    resume: Path | None = None
    if args.resume_from_checkpoint:
        found = _checkpoints(out_dir)
        resume = Path(args.resume_from_checkpoint) if isinstance(args.resume_from_checkpoint, str) else None
        resume = resume or (found[-1] if found else None)
        if resume is None or not (resume / STATE_FILE).is_file():
            raise InvalidRequestError(f"no checkpoint to resume from in {out_dir}", param="resume_from_checkpoint")
    records = read_records(args) if records is None else list(records)
    if not records:
        raise InvalidRequestError("no training records: nothing to train on", param="dataset")
    if args.bf16 and not torch.cuda.is_available() and not getattr(torch.backends, "mkldnn", None):
        raise InvalidRequestError("bf16 is not available on this machine: unset it", param="bf16")
    torch.manual_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base = base or load_base(args.model_name_or_path, home=home)
    samples, skipped = tokenize(records, base.tokenizer, args.template, args.max_source_length, args.max_target_length)
    if not samples:
        raise InvalidRequestError(
            f"all {len(records)} records were skipped: prompts longer than max_source_length "
            f"({args.max_source_length} tokens) or empty targets",
            param="max_source_length",
        )
    model = _prepare_model(base, args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    bs, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    per_epoch = math.ceil(len(batches(samples, bs, args.seed, 0)) / accum)
    planned = args.max_steps if args.max_steps > 0 else max(1, math.ceil(per_epoch * args.num_train_epochs))
    plan = Plan(planned, int(planned * args.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(args.lr_scheduler_type, s, plan))
    step, done_batches = 0, 0
    losses: list[tuple[int, float]] = []
    if resume is not None:
        step, done_batches, losses, saved_total = _load_checkpoint(resume, model, optimiser, scheduler)
        if args.max_minutes > 0 and args.max_steps <= 0:
            plan.total = saved_total  # the schedule planned on the time budget goes on as planned
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "trainer_log.jsonl"
    started = time.perf_counter()
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16 if args.bf16 else torch.float16)
        if (args.bf16 or args.fp16)
        else None
    )
    stopped = "finished"
    seen = 0
    window: list[float] = []
    last: float | None = losses[-1][1] if losses else None

    def stream() -> Iterator[list[int]]:
        epoch, index = 0, 0
        while True:
            for b in batches(samples, bs, args.seed, epoch):
                if index >= done_batches:
                    yield b
                index += 1
            epoch += 1

    it = stream()
    with log_path.open("a", encoding="utf-8") as log_file:
        while step < plan.total:
            optimiser.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(accum):
                batch = [samples[i] for i in next(it)]
                done_batches += 1
                if autocast is not None:
                    with autocast:
                        loss = batch_loss(model, batch, base.tokenizer.pad_token_id)
                else:
                    loss = batch_loss(model, batch, base.tokenizer.pad_token_id)
                (loss / accum).backward()
                total += float(loss.detach()) / accum
                seen += len(batch)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            scheduler.step()
            step += 1
            window.append(total)
            elapsed = time.perf_counter() - started
            if args.max_minutes > 0 and step in (3, 20) and args.max_steps <= 0 and step < plan.total:
                # A time budget shorter than the epochs bounds the run: plan the schedule (and its warm-up)
                # on the pace so far; planned twice, the second time on a steadier pace.
                fits = int(args.max_minutes * 60 / (elapsed / step))
                plan.total = max(step + 1, min(planned, fits))
                plan.warmup = min(plan.warmup, int(plan.total * args.warmup_ratio))
            if step % args.logging_steps == 0 or step == plan.total:
                last = sum(window) / len(window)
                window.clear()
                losses.append((step, last))
                entry = {
                    "current_steps": step,
                    "total_steps": plan.total,
                    "loss": round(last, 5),
                    "learning_rate": scheduler.get_last_lr()[0],
                    "epoch": round(done_batches / max(1, per_epoch * accum), 3),
                    "elapsed_time": round(elapsed, 1),
                }
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
            if progress:
                progress(step, plan.total, last)
            if step % args.save_steps == 0 and step < plan.total:
                folder = out_dir / f"checkpoint-{step}"
                _save_checkpoint(folder, model, optimiser, scheduler, step, done_batches, losses, plan)
            if args.max_minutes > 0 and elapsed >= args.max_minutes * 60 and step < plan.total:
                stopped = "max_minutes"
                break
    if args.max_steps > 0 and stopped == "finished":
        stopped = "max_steps"
    seconds = time.perf_counter() - started
    model.eval()
    _save_model(model, base, out_dir, args)
    result = TrainResult(
        output_dir=out_dir,
        steps=step,
        samples=seen,
        skipped=skipped,
        seconds=round(seconds, 1),
        samples_per_s=round(seen / seconds, 3) if seconds else 0.0,
        first_loss=losses[0][1] if losses else None,
        last_loss=losses[-1][1] if losses else None,
        losses=losses,
        stopped=stopped,
    )
    if args.finetuning_type == "lora" and base.gguf is not None:
        from datapilot.train._gguf import write_lora_gguf

        result.adapter_gguf = write_lora_gguf(_lora_state(model), base.gguf, out_dir / ADAPTER_GGUF, args.lora_alpha)
    if args.plot_loss:
        plot_loss(losses, out_dir / "training_loss.png")
    (out_dir / "train_results.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    meta = {
        "base": base.source,
        "gguf": str(base.gguf) if base.gguf else None,
        "model_name_or_path": args.model_name_or_path,
        "template": args.template,
        "finetuning_type": args.finetuning_type,
        "lora_alpha": args.lora_alpha,
        "lora_rank": args.lora_rank,
        "args": asdict(args),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return result


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: their quarrel, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # Saving an adapter of a GGUF base: there is no Hugging Face config beside it to compare vocabularies.
        warnings.filterwarnings("ignore", message="Could not find a config file", category=UserWarning)
        yield


def _lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    with quiet_peft():
        return dict(get_peft_model_state_dict(model, save_embedding_layers=False))


def _save(model: Any, folder: Path) -> None:
    if hasattr(model, "peft_config"):  # the adapter alone, never a copy of the base's embeddings
        with quiet_peft():
            model.save_pretrained(str(folder), save_embedding_layers=False)
    else:
        model.save_pretrained(str(folder))


def _save_model(model: Any, base: Base, out_dir: Path, args: TrainArgs) -> None:
    _save(model, out_dir)
    if args.finetuning_type == "full":
        base.tokenizer.save_pretrained(str(out_dir))


def _save_checkpoint(
    folder: Path, model: Any, optimiser: Any, scheduler: Any, step: int, done: int, losses: list[Any], plan: Plan
) -> None:
    torch = _torch()
    folder.mkdir(parents=True, exist_ok=True)
    _save(model, folder)
    torch.save({"optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict()}, folder / "optimiser.pt")
    state = {"step": step, "batches": done, "losses": losses, "total": plan.total}
    (folder / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")


def _load_checkpoint(folder: Path, model: Any, optimiser: Any, scheduler: Any) -> tuple[int, int, list[Any], int]:
    torch = _torch()
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    if hasattr(model, "load_adapter"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    saved = torch.load(folder / "optimiser.pt", weights_only=True)
    optimiser.load_state_dict(saved["optimiser"])
    scheduler.load_state_dict(saved["scheduler"])
    return int(state["step"]), int(state["batches"]), [tuple(x) for x in state["losses"]], int(state["total"])


def plot_loss(losses: Sequence[tuple[int, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        ax.plot([s for s, _ in losses], [v for _, v in losses], marker="o", markersize=2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
