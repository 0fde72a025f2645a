"""Baseline scores of text-to-SQL models, the equivalent of DB-GPT-Hub's ``baseline.show_scores()``.

Two sources are merged: the scores shipped with the package (``data/baseline.json``) and the user's
own, which ``record_score`` appends to ``DATAPILOT_HOME/train/scores.json`` (``DATAPILOT_HOME``
defaults to ``~/.datapilot``). Each row is::

    {"model": "Qwen2.5-0.5B-Instruct", "method": "lora", "dataset": "spider", "etype": "exec",
     "easy": 0.71, "medium": 0.52, "hard": 0.41, "extra": 0.25, "all": 0.51, "note": "..."}

with ``method`` one of base, lora, qlora, full, ``etype`` exec or match, and accuracies in [0, 1].
``show_scores()`` prints them as a table and returns them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datapilot.core.errors import InvalidRequestError

METHODS = ("base", "lora", "qlora", "full")
ETYPES = ("exec", "match")
SCORE_KEYS = ("easy", "medium", "hard", "extra", "all")
COLUMNS = ("model", "method", "dataset", "etype", *SCORE_KEYS, "note")
BASELINE_FILE = Path(__file__).resolve().parent / "data" / "baseline.json"
NO_SCORES = (
    "no scores yet: run `datapilot train text2sql` to fine-tune and evaluate a model, or record one with "
    "datapilot.train.baseline.record_score(row)"
)


def home_dir(home: Path | None = None) -> Path:
    """``home``, else ``DATAPILOT_HOME``, else ``~/.datapilot``."""
    if home is not None:
        return Path(home).expanduser()
    return Path(os.environ.get("DATAPILOT_HOME") or "~/.datapilot").expanduser()


def scores_path(home: Path | None = None) -> Path:
    """The user's scores file: ``<home>/train/scores.json``."""
    return home_dir(home) / "train" / "scores.json"


def check_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A score row with every column, checked: raises InvalidRequestError saying what to fix."""
    if not isinstance(row, Mapping):
        raise InvalidRequestError(f"a score row must be a dict with keys {', '.join(COLUMNS)}, not {row!r}")
    unknown = sorted(str(k) for k in row if k not in COLUMNS)
    if unknown:
        raise InvalidRequestError(f"unknown score key(s): {', '.join(unknown)}; accepted keys: {', '.join(COLUMNS)}")
    out: dict[str, Any] = {}
    for key in ("model", "dataset"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequestError(f"score row needs {key!r}: a non-empty string", param=key)
        out[key] = value.strip()
    for key, allowed in (("method", METHODS), ("etype", ETYPES)):
        value = row.get(key)
        if value not in allowed:
            raise InvalidRequestError(f"score row {key!r} must be one of {', '.join(allowed)}, not {value!r}",
                                      param=key)  # fmt: skip
        out[key] = value
    for key in SCORE_KEYS:
        value = row.get(key)
        if value is None and key != "all":  # no question of that level in the set
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InvalidRequestError(f"score row {key!r} must be an accuracy between 0 and 1, not {value!r}",
                                      param=key)  # fmt: skip
        out[key] = float(value)
    note = row.get("note", "")
    if not isinstance(note, str):
        raise InvalidRequestError(f"score row 'note' must be a string, not {note!r}", param="note")
    out["note"] = note
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"{path} is not readable JSON ({exc}): fix or remove it") from None
    if not isinstance(data, list):
        raise InvalidRequestError(f"{path} must hold a JSON list of score rows: fix or remove it")
    rows = []
    for i, row in enumerate(data):
        try:
            rows.append(check_row(row))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{path}, row {i}: {exc.message}") from None
    return rows


def load_scores(home: Path | None = None) -> list[dict[str, Any]]:
    """The shipped baseline rows, then the user's."""
    return _read_rows(BASELINE_FILE) + _read_rows(scores_path(home))


def record_score(row: dict[str, Any], home: Path | None = None) -> None:
    """Append ``row`` (checked with ``check_row``) to ``<home>/train/scores.json``, atomically."""
    checked = check_row(row)
    path = scores_path(home)
    rows = _read_rows(path)
    rows.append(checked)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".scores-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def show_scores(home: Path | None = None) -> list[dict[str, Any]]:
    """Print the baseline and recorded scores as a table and return them (a line saying there are
    none, and [], when there are none)."""
    from rich.console import Console
    from rich.table import Table

    rows = load_scores(home)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or captured: no terminal width to fit, keep rows on one line
    if not rows:
        console.print(NO_SCORES, markup=False, highlight=False, soft_wrap=True)
        return []
    table = Table(title="text-to-SQL scores")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in SCORE_KEYS else "left")
    for row in rows:
        table.add_row(*(_cell(row[c]) if c in SCORE_KEYS else str(row[c]) for c in COLUMNS))
    console.print(table)
    return rows
