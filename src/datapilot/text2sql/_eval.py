"""Execution accuracy (EX) on Spider-format questions over SQLite databases.

A prediction counts when its result equals the gold query's result as a multiset of rows (in order
only when the gold query has a top-level ORDER BY). Columns may come in another order: a prediction
whose columns are a permutation of the gold's matches too. Values compare loosely: 3 == 3.0, and
floats to 4 decimal places.
"""

from __future__ import annotations

import csv
import itertools
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.datasource import check_read_only

DIFFICULTIES = ("easy", "medium", "hard", "extra")
GOLD_TIMEOUT_S = 30.0


@dataclass(slots=True)
class Question:
    question: str
    query: str
    db_id: str
    difficulty: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def load_questions(path: str | Path) -> list[Question]:
    """Spider's JSON list (``question``, ``query``, ``db_id``; optional ``difficulty``), or JSON lines."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        data = data.get("questions") or data.get("data") or []
    out = []
    for i, item in enumerate(data):
        try:
            q = Question(str(item["question"]), str(item["query"]), str(item["db_id"]))
        except (KeyError, TypeError):
            raise InvalidRequestError(f"{path}: item {i} lacks question, query or db_id") from None
        q.difficulty = str(item.get("difficulty") or item.get("hardness") or difficulty_of(q.query))
        q.extra = {k: v for k, v in item.items() if k not in ("question", "query", "db_id", "difficulty")}
        out.append(q)
    return out


def difficulty_of(sql: str) -> str:
    """Spider's hardness levels, approximated from the query's parts when a file gives none."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError:
        return "extra"
    selects = len(list(tree.find_all(exp.Select)))
    joins = len(list(tree.find_all(exp.Join)))
    parts = sum(bool(list(tree.find_all(t))) for t in (exp.Where, exp.Group, exp.Order, exp.Having, exp.Limit)) + len(
        list(tree.find_all(exp.SetOperation))
    )
    aggregates = len(list(tree.find_all(exp.AggFunc)))
    if selects > 2 or (selects > 1 and (joins > 1 or parts > 2)):
        return "extra"
    if selects > 1 or joins > 1 or parts > 2 or (joins and parts > 1):
        return "hard"
    if joins or parts > 1 or (parts and aggregates > 1):
        return "medium"
    return "easy"


def gold_orders(sql: str) -> bool:
    """Whether the query's result order is part of its meaning (a top-level ORDER BY)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError:
        return "order by" in sql.lower()
    return tree.args.get("order") is not None


def normalise_value(v: Any) -> Any:
    """A value as results compare it: 3 == 3.0, floats to 4 places, booleans as 0/1, bytes as hex."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        f = round(float(v), 4)
        return int(f) if f.is_integer() else f
    if isinstance(v, bytes):
        return v.hex()
    return v


def _rows(rows: Iterable[Iterable[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(normalise_value(v) for v in r) for r in rows]


def results_match(pred: list[tuple[Any, ...]], gold: list[tuple[Any, ...]], ordered: bool) -> bool:
    """EX: equal as multisets (as lists when ``ordered``), allowing a permutation of the columns."""
    p, g = _rows(pred), _rows(gold)
    if len(p) != len(g):
        return False
    if not g:
        return True
    width = len(g[0])
    if any(len(r) != width for r in p):
        return False

    def same(a: list[tuple[Any, ...]]) -> bool:
        return a == g if ordered else Counter(a) == Counter(g)

    if same(p):
        return True
    if width > 6:
        return False
    # Columns in another order: try the permutations whose columns hold the same values as the gold's.
    gold_cols = [Counter(r[i] for r in g) for i in range(width)]
    for perm in itertools.permutations(range(width)):
        if perm == tuple(range(width)):
            continue
        if all(Counter(r[perm[i]] for r in p) == gold_cols[i] for i in range(width)) and same(
            [tuple(r[i] for i in perm) for r in p]
        ):
            return True
    return False


def run_sqlite(path: Path, sql: str, timeout_s: float = GOLD_TIMEOUT_S) -> list[tuple[Any, ...]]:
    """Run a query on a read-only SQLite connection (used for gold queries, which the project wrote)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    deadline = time.monotonic() + timeout_s
    con.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


@dataclass(slots=True)
class Prediction:
    question: Question
    sql: str | None
    correct: bool
    error: str | None = None
    attempts: int = 0
    elapsed_s: float = 0.0


@dataclass(slots=True)
class EvalReport:
    predictions: list[Prediction]

    @property
    def total(self) -> int:
        return len(self.predictions)

    @property
    def correct(self) -> int:
        return sum(p.correct for p in self.predictions)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def by_difficulty(self) -> dict[str, tuple[int, int, float]]:
        """difficulty -> (correct, total, EX), in Spider's order, then any others."""
        groups: dict[str, list[Prediction]] = {}
        for p in self.predictions:
            groups.setdefault(p.question.difficulty or "unknown", []).append(p)
        order = [d for d in DIFFICULTIES if d in groups] + sorted(set(groups) - set(DIFFICULTIES))
        return {
            d: (sum(p.correct for p in groups[d]), len(groups[d]), sum(p.correct for p in groups[d]) / len(groups[d]))
            for d in order
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "correct": self.correct,
            "execution_accuracy": round(self.accuracy, 4),
            "by_difficulty": {
                d: {"correct": c, "total": n, "execution_accuracy": round(a, 4)}
                for d, (c, n, a) in self.by_difficulty().items()
            },
        }

    def write_csv(self, path: str | Path) -> None:
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(
                ["db_id", "difficulty", "question", "gold", "predicted", "correct", "error", "attempts", "seconds"]
            )
            for p in self.predictions:
                q = p.question
                w.writerow(
                    [q.db_id, q.difficulty, q.question, q.query, p.sql or "", int(p.correct), p.error or "",
                     p.attempts, f"{p.elapsed_s:.2f}"]
                )  # fmt: skip


# What the evaluator needs from a predictor: the SQL it settled on (None if none), the number of
# model calls it made and its error if any. ``Text2SQL.answer`` fits through a small adapter.
Predictor = Callable[[Question, Path], Awaitable[tuple[str | None, int, str | None]]]


def database_path(db_dir: Path, db_id: str) -> Path:
    """Spider's layout (``DIR/db_id/db_id.sqlite``), or a flat folder (``DIR/db_id.sqlite``)."""
    for candidate in (db_dir / db_id / f"{db_id}.sqlite", db_dir / f"{db_id}.sqlite", db_dir / f"{db_id}.db"):
        if candidate.is_file():
            return candidate
    raise InvalidRequestError(f"database {db_id!r} not found under {db_dir}")


async def evaluate(
    questions: list[Question],
    db_dir: Path,
    predict: Predictor,
    progress: Callable[[Prediction], None] | None = None,
) -> EvalReport:
    """Predict each question, run prediction and gold on the question's database, compare."""
    predictions = []
    gold_cache: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for q in questions:
        path = database_path(db_dir, q.db_id)
        started = time.perf_counter()
        error: str | None
        try:
            sql, attempts, error = await predict(q, path)
        except Exception as exc:  # one broken question must not end the run
            sql, attempts, error = None, 0, f"{type(exc).__name__}: {exc}"
        correct = False
        if sql:
            key = (q.db_id, q.query)
            if key not in gold_cache:
                gold_cache[key] = run_sqlite(path, q.query)
            try:
                check_read_only(sql, "sqlite")  # predictions are model output: guarded like any query
                pred_rows = run_sqlite(path, sql)
                correct = results_match(pred_rows, gold_cache[key], gold_orders(q.query))
            except DataPilotError as exc:
                error = error or exc.message
            except sqlite3.Error as exc:
                error = error or str(exc)
        pred = Prediction(q, sql, correct, error, attempts, time.perf_counter() - started)
        predictions.append(pred)
        if progress is not None:
            progress(pred)
    return EvalReport(predictions)
