"""Execution accuracy (EX) on Spider-format questions over SQLite databases.

A prediction counts when its result equals the gold query's result as a multiset of rows (in order
only when the gold query has a top-level ORDER BY). Columns may come in another order: a prediction
whose columns are a permutation of the gold's matches too. Values compare loosely: 3 == 3.0, and
floats to 4 decimal places.

Besides EX the report gives what tuning needs: the share of predictions that ran at all, EX by
difficulty and by language, a class for every wrong prediction (``classify_error``: which part of
the SQL differs from the gold's), the time and model calls per question, and, across runs with
pipeline stages switched off, each stage's effect (``ablation_rows``).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datapilot.core.errors import DataPilotError, InvalidRequestError, MissingDependencyError
from datapilot.datasource import check_read_only

DIFFICULTIES = ("easy", "medium", "hard", "extra")
GOLD_TIMEOUT_S = 30.0
# What went wrong in a wrong prediction, in the order ``classify_error`` tries them.
ERROR_CLASSES = (
    "not_executable",
    "wrong_table",
    "missing_join",
    "wrong_column",
    "wrong_value",
    "wrong_aggregation",
    "other",
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(slots=True)
class Question:
    question: str
    query: str
    db_id: str
    difficulty: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str:
        """The file's ``language`` when it gives one; else "zh" for a question with CJK characters, "en"."""
        given = self.extra.get("language")
        if given:
            return str(given)
        return "zh" if _CJK.search(self.question) else "en"


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


# --- what went wrong ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Parts:
    """The parts of a query that ``classify_error`` compares, names lower-cased and unqualified."""

    tables: set[str]
    columns: set[str]
    grouped: set[str]
    values: Counter[str]
    shape: tuple[Any, ...]  # aggregates, DISTINCT, HAVING, GROUP BY, ORDER BY, LIMIT / OFFSET


def _bare(node: exp.Expression, aliases: dict[str, exp.Expression] | None = None) -> str:
    """An expression's SQL with references to output names replaced by what they name ("ORDER BY n" is
    "ORDER BY COUNT(*)"), then its columns unqualified, so that aliases of tables do not count."""

    def named(n: exp.Expression) -> exp.Expression:
        if aliases and isinstance(n, exp.Column) and not n.table and n.name.lower() in aliases:
            return aliases[n.name.lower()].copy()
        return n

    def unqualified(n: exp.Expression) -> exp.Expression:
        return exp.column(n.name.lower()) if isinstance(n, exp.Column) and n.name else n

    return node.copy().transform(named).transform(unqualified).sql(dialect="sqlite").lower()


def _parts(sql: str) -> _Parts | None:
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError:
        return None
    if not isinstance(tree, exp.Query):
        return None
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    tables = {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}
    # Output names that are not a column's own name ("COUNT(*) AS n"): references to them are no columns.
    aliases: dict[str, exp.Expression] = {
        a.alias.lower(): a.this
        for a in tree.find_all(exp.Alias)
        if a.alias and not (isinstance(a.this, exp.Column) and a.this.name.lower() == a.alias.lower())
    }
    columns, grouped = set(), set()
    for col in tree.find_all(exp.Column):
        name = col.name.lower()
        if not name or (not col.table and name in aliases and col.find_ancestor(exp.Alias) is None):
            continue  # a reference to an output name
        if col.find_ancestor(exp.Group) is not None:
            grouped.add(name)
        elif col.find_ancestor(exp.Order) is None:
            columns.add(name)
    values: Counter[str] = Counter()
    for lit in tree.find_all(exp.Literal):
        if lit.find_ancestor(exp.Limit, exp.Offset) is not None:
            continue
        sign = "-" if isinstance(lit.parent, exp.Neg) else ""
        if lit.is_string:
            values[f"'{lit.this}'"] += 1
        else:
            try:
                values[sign + str(normalise_value(float(lit.this)))] += 1
            except ValueError:
                values[sign + str(lit.this)] += 1
    # Aggregates as selected; those in ORDER BY and HAVING count as parts of those clauses.
    aggregates = sorted(
        f"{type(a).__name__.lower()}{' distinct' if a.find(exp.Distinct) else ''}"
        for a in tree.find_all(exp.AggFunc)
        if a.find_ancestor(exp.Order, exp.Having) is None
    )
    having = sorted(_bare(h.this, aliases) for h in tree.find_all(exp.Having))
    groups = sorted(_bare(e, aliases) for g in tree.find_all(exp.Group) for e in g.expressions)
    orders = sorted(
        f"{_bare(o.this, aliases)} {'desc' if o.args.get('desc') else 'asc'}" for o in tree.find_all(exp.Ordered)
    )
    limits = sorted(_bare(n) for n in tree.find_all(exp.Limit, exp.Offset))
    distinct = sum(1 for s in tree.find_all(exp.Select) if s.args.get("distinct"))
    return _Parts(tables, columns, grouped, values, (aggregates, distinct, having, groups, orders, limits))


def classify_error(pred_sql: str | None, gold_sql: str, executed: bool) -> str:
    """What a wrong prediction got wrong, judged from its SQL against the gold's (one of ERROR_CLASSES).

    ``not_executable``: no SQL, or the database refused it or timed out. Then the first part that
    differs: the tables (``missing_join`` when the prediction reads a strict subset of the gold's,
    else ``wrong_table``), the columns selected or filtered on (``wrong_column``), the literals
    (``wrong_value``: 'Shanghai' for 'shanghai', 2023 for 2024), the aggregates, DISTINCT, GROUP BY,
    ORDER BY or LIMIT (``wrong_aggregation``). Anything else (an operator, a nesting) is ``other``.
    """
    if not pred_sql or not executed:
        return "not_executable"
    pred, gold = _parts(pred_sql), _parts(gold_sql)
    if pred is None or gold is None:
        return "other"
    if pred.tables != gold.tables:
        return "missing_join" if pred.tables and pred.tables < gold.tables else "wrong_table"
    differ = pred.columns ^ gold.columns
    # A column only one side groups by is a grouping difference, not a wrong column.
    if differ - pred.grouped - gold.grouped:
        return "wrong_column"
    if pred.values != gold.values:
        return "wrong_value"
    if pred.shape != gold.shape or pred.grouped != gold.grouped:
        return "wrong_aggregation"
    return "other"


@dataclass(slots=True)
class Prediction:
    question: Question
    sql: str | None
    correct: bool
    error: str | None = None
    attempts: int = 0
    elapsed_s: float = 0.0  # the predictor's time: the pipeline's, without the evaluator's runs
    executed: bool = False  # the predicted SQL ran on the database (whatever its result)
    error_class: str | None = None  # one of ERROR_CLASSES when wrong; None when correct


Grouped = dict[str, tuple[int, int, float]]


def _grouped(predictions: list[Prediction], key: Callable[[Prediction], str], first: Sequence[str] = ()) -> Grouped:
    """group -> (correct, total, EX), the groups named in ``first`` in that order, then the others sorted."""
    groups: dict[str, list[Prediction]] = {}
    for p in predictions:
        groups.setdefault(key(p) or "unknown", []).append(p)
    order = [g for g in first if g in groups] + sorted(set(groups) - set(first))
    return {g: (sum(p.correct for p in groups[g]), len(groups[g]), sum(p.correct for p in groups[g]) / len(groups[g]))
            for g in order}  # fmt: skip


def _percentile(values: Sequence[float], share: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    at = share * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


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

    @property
    def executable(self) -> int:
        return sum(p.executed for p in self.predictions)

    @property
    def executable_share(self) -> float:
        return self.executable / self.total if self.total else 0.0

    def by_difficulty(self) -> Grouped:
        """difficulty -> (correct, total, EX), in Spider's order, then any others."""
        return _grouped(self.predictions, lambda p: p.question.difficulty, DIFFICULTIES)

    def by_language(self) -> Grouped:
        """language -> (correct, total, EX), English and Chinese first."""
        return _grouped(self.predictions, lambda p: p.question.language, ("en", "zh"))

    def errors(self) -> dict[str, int]:
        """How many wrong predictions fall in each of ERROR_CLASSES (every class, zero or not)."""
        counts = Counter(p.error_class for p in self.predictions if not p.correct)
        return {c: counts.get(c, 0) for c in ERROR_CLASSES}

    def time_stats(self) -> dict[str, float]:
        """Seconds per question (median, p90, mean, total) and model calls per question (mean)."""
        seconds = [p.elapsed_s for p in self.predictions]
        return {
            "median_s": round(statistics.median(seconds), 3) if seconds else 0.0,
            "p90_s": round(_percentile(seconds, 0.9), 3),
            "mean_s": round(statistics.fmean(seconds), 3) if seconds else 0.0,
            "total_s": round(sum(seconds), 3),
            "mean_attempts": round(statistics.fmean(p.attempts for p in self.predictions), 3) if seconds else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        def groups(g: Grouped) -> dict[str, dict[str, Any]]:
            return {k: {"correct": c, "total": n, "execution_accuracy": round(a, 4)} for k, (c, n, a) in g.items()}

        return {
            "total": self.total,
            "correct": self.correct,
            "execution_accuracy": round(self.accuracy, 4),
            "executable": self.executable,
            "executable_share": round(self.executable_share, 4),
            "by_difficulty": groups(self.by_difficulty()),
            "by_language": groups(self.by_language()),
            "errors": self.errors(),
            "time": self.time_stats(),
        }

    def write_csv(self, path: str | Path) -> None:
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(
                ["db_id", "difficulty", "language", "question", "gold", "predicted", "correct", "error_class", "error",
                 "attempts", "seconds"]
            )  # fmt: skip
            for p in self.predictions:
                q = p.question
                w.writerow(
                    [q.db_id, q.difficulty, q.language, q.question, q.query, p.sql or "", int(p.correct),
                     p.error_class or "", p.error or "", p.attempts, f"{p.elapsed_s:.2f}"]
                )  # fmt: skip


def ablation_rows(runs: Sequence[tuple[str, EvalReport]]) -> list[dict[str, Any]]:
    """One row per run: the stage it switched off (the first run: all stages on), EX, the executable
    share, the median seconds per question and the change in EX against the first run."""
    if not runs:
        return []
    base = runs[0][1].accuracy
    return [
        {
            "stage": stage,
            "total": r.total,
            "correct": r.correct,
            "execution_accuracy": round(r.accuracy, 4),
            "executable_share": round(r.executable_share, 4),
            "median_s": r.time_stats()["median_s"],
            "delta_ex": round(r.accuracy - base, 4),
        }
        for stage, r in runs
    ]


def write_chart(path: str | Path, report: EvalReport, ablation: Sequence[dict[str, Any]] = ()) -> None:
    """A PNG: EX by difficulty and by language, the count of each error class and, given
    ``ablation_rows``, EX per run with a stage switched off."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "all") from None
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    panels = 3 if ablation else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), dpi=100)
    try:
        ax = axes[0]
        difficulties, languages = report.by_difficulty(), report.by_language()
        groups = [*difficulties.items(), *languages.items()]
        colours = ["tab:blue"] * len(difficulties) + ["tab:orange"] * len(languages)
        bars = ax.bar([g for g, _ in groups], [ex for _, (_, _, ex) in groups], color=colours)
        ax.bar_label(bars, labels=[f"{c}/{n}" for _, (c, n, _) in groups], fontsize=8)
        ax.axvline(len(difficulties) - 0.5, color="gray", linewidth=0.8, linestyle="--")
        ax.legend(handles=[Patch(color="tab:blue", label="difficulty"), Patch(color="tab:orange", label="language")],
                  loc="upper right", fontsize="small")  # fmt: skip
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("EX")
        ax.set_title(f"EX {report.accuracy:.1%} by difficulty and language ({report.total} questions)")

        ax = axes[1]
        errors = report.errors()
        bars = ax.bar(list(errors), list(errors.values()), color="tab:red")
        ax.bar_label(bars, fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(range(len(errors)), list(errors), rotation=30, ha="right")
        ax.set_ylabel("wrong predictions")
        ax.set_title(f"error classes (executable {report.executable_share:.0%})")

        if ablation:
            ax = axes[2]
            names = ["all on" if i == 0 else f"no {r['stage']}" for i, r in enumerate(ablation)]
            bars = ax.bar(names, [r["execution_accuracy"] for r in ablation],
                          color=["tab:green", *["tab:gray"] * (len(ablation) - 1)])  # fmt: skip
            ax.bar_label(bars, labels=[f"{r['delta_ex']:+.1%}" if i else f"{r['execution_accuracy']:.1%}"
                                       for i, r in enumerate(ablation)], fontsize=8)  # fmt: skip
            ax.set_ylim(0, 1.15)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            ax.set_ylabel("EX")
            ax.set_title("EX with each stage off (ΔEX against the first run)")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


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
    timeout_s: float = GOLD_TIMEOUT_S,
) -> EvalReport:
    """Predict each question, run prediction and gold on the question's database, compare, and class
    what a wrong prediction got wrong. ``timeout_s`` bounds each predicted query."""
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
        elapsed = time.perf_counter() - started
        correct = executed = False
        if sql:
            key = (q.db_id, q.query)
            if key not in gold_cache:
                gold_cache[key] = run_sqlite(path, q.query)
            try:
                check_read_only(sql, "sqlite")  # predictions are model output: guarded like any query
                pred_rows = run_sqlite(path, sql, timeout_s)
                executed = True
                correct = results_match(pred_rows, gold_cache[key], gold_orders(q.query))
            except DataPilotError as exc:
                error = error or exc.message
            except sqlite3.Error as exc:
                timed_out = str(exc) == "interrupted"  # what the progress handler's deadline raises
                error = error or (f"timed out after {timeout_s:g} s" if timed_out else str(exc))
        error_class = None if correct else classify_error(sql, q.query, executed)
        pred = Prediction(q, sql, correct, error, attempts, elapsed, executed, error_class)
        predictions.append(pred)
        if progress is not None:
            progress(pred)
    return EvalReport(predictions)
