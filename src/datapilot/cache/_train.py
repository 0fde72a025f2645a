"""Train a paraphrase cross-encoder for the cache's reranker stage from labelled question pairs.

``datapilot cache train-reranker --data pairs.jsonl --out DIR`` fine-tunes a BERT-style model (by default
the bundled MiniLM's weights, so nothing is downloaded) to score whether two questions ask the same
thing, and writes a folder that ``[cache.rerankers.NAME] kind = "cross_encoder"`` loads. A slice of the
pairs is held out and scored, so the report says how well it separates pairs it never saw.

The loop is plain PyTorch: pairs in random order (each pair's two sides swapped at random, since a
paraphrase reads both ways), batches of similar length so padding stays small, AdamW with a linear
warm-up and decay, binary cross-entropy on one logit.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.core.errors import ConfigError, MissingDependencyError, ModelNotReadyError

Progress = Callable[[int, int, float], None]  # (step, steps, running loss)


@dataclass
class TrainReport:
    out: str
    base: str
    train_pairs: int
    holdout_pairs: int
    epochs: int
    steps: int
    seconds: float
    final_loss: float
    holdout_accuracy: float | None  # at score 0.5
    holdout_precision_at_recall_0_4: float | None
    holdout_auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float | None:
    """Precision among the top-scored pairs, taken down to the first place ``recall`` is reached."""
    if labels.sum() == 0:
        return None
    order = np.argsort(-scores)
    found = np.cumsum(labels[order])
    at = int(np.searchsorted(found / labels.sum(), recall))
    return float(found[min(at, len(found) - 1)] / (min(at, len(found) - 1) + 1))


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if not positives or not negatives:
        return None
    ranks = np.argsort(np.argsort(scores)) + 1
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _batches(
    pairs: list[tuple[str, str, int]], size: int, rng: random.Random, tokens: Callable[[str], int]
) -> list[list[tuple[str, str, int]]]:
    """Batches of pairs of similar length (sorted within pools of 50 batches), in random order."""
    order = pairs[:]
    rng.shuffle(order)
    out: list[list[tuple[str, str, int]]] = []
    pool = size * 50
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda p: tokens(p[0]) + tokens(p[1]))
        out.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(out)
    return out


def train_reranker(
    pairs: list[tuple[str, str, int]],
    out: Path,
    *,
    base: Path | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    max_length: int = 64,
    learning_rate: float = 3e-5,
    holdout: float = 0.1,
    seed: int = 0,
    progress: Progress | None = None,
) -> TrainReport:
    """Fine-tune a cross-encoder on ``(a, b, label)`` pairs and save it to ``out``."""
    if len(pairs) < 2:
        raise ConfigError("training a reranker needs at least two labelled pairs")
    if not any(label == 1 for *_, label in pairs) or not any(label == 0 for *_, label in pairs):
        raise ConfigError("training a reranker needs pairs of both labels: 1 (same question) and 0 (different)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "hf") from None
    if base is None:
        from datapilot.cache._embed import bundled_minilm_path

        base = bundled_minilm_path()
    if not base.is_dir():
        raise ModelNotReadyError(f"base model folder not found: {base}")
    transformers.logging.set_verbosity_error()  # "newly initialized classifier": expected, it is what we train
    transformers.logging.disable_progress_bar()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    n_holdout = int(len(shuffled) * holdout) if holdout > 0 else 0
    held, train = shuffled[:n_holdout], shuffled[n_holdout:]
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, local_files_only=True)
    model.train()

    def tokens(text: str) -> int:
        return len(text) // 4  # a cheap length for bucketing; the tokenizer pads to the real longest

    steps_per_epoch = math.ceil(len(train) / batch_size)
    steps = steps_per_epoch * epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    step, running = 0, 0.0
    recent: list[float] = []  # the last 50 losses: their mean is the loss the progress shows
    for _ in range(epochs):
        for batch in _batches(train, batch_size, rng, tokens):
            sides = [(a, b) if rng.random() < 0.5 else (b, a) for a, b, _ in batch]
            enc = tokenizer(
                [s[0] for s in sides],
                [s[1] for s in sides],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = model(**enc).logits.squeeze(-1)
            loss = loss_fn(logits, torch.tensor([float(label) for *_, label in batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad()
            step += 1
            recent = [*recent[-49:], loss.item()]
            running = sum(recent) / len(recent)
            if progress is not None:
                progress(step, steps, running)
    seconds = time.perf_counter() - started
    model.eval()
    accuracy = precision = auc = None
    if held:
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(held), 64):
                chunk = held[start : start + 64]
                enc = tokenizer(
                    [a for a, _, _ in chunk],
                    [b for _, b, _ in chunk],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                scores.extend(torch.sigmoid(model(**enc).logits.squeeze(-1)).tolist())
        s, y = np.asarray(scores), np.asarray([label for *_, label in held], dtype=np.int64)
        accuracy = float(((s >= 0.5) == (y == 1)).mean())
        precision, auc = precision_at_recall(s, y, 0.4), _auc(s, y)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    report = TrainReport(
        str(out), str(base), len(train), len(held), epochs, steps, seconds, running, accuracy, precision, auc
    )
    (out / "datapilot_reranker.json").write_text(json.dumps({**report.to_dict(), "max_length": max_length}, indent=2))
    return report
