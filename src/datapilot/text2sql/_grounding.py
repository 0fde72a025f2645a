"""Grounding a question in one data source: its real values and its verified question -> SQL pairs.

``Grounding`` is what the pipeline asks, per question: the value hits (``ValueIndex``, read only when
it is ready: a source whose index is still building answers without hints, never waits), and the
verified examples nearest the question (``ExampleStore.ranked``, question-masked similarity).

``reuse`` decides whether a verified example's SQL answers the new question as it is: the masked
questions must be near-identical, name the same tables and columns, ask for the same shape (the cue
words of ``_shots``: "average" and "mean" agree, "highest" does not), and the values must agree. A
value the example's SQL compares against that the new question does not name is replaced by the
value the question names, but only when the value index confirms that value lives in the same
column; numbers (a year, a top N) must be the same in both questions. Anything less is not reused:
the example is shown to the model instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datapilot.datasource import TableInfo
from datapilot.text2sql._prompt import Example
from datapilot.text2sql._shots import question_shapes

if TYPE_CHECKING:
    from datapilot.text2sql._examples import ExampleStore, StoredExample
    from datapilot.text2sql._values import ValueHit, ValueIndex

# The shapes that change what is asked ("highest" is not "average"); filters and wording do not.
_ASKS = frozenset({"count", "group", "avg", "sum", "min", "max", "top", "none", "above", "distinct"})
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


@dataclass(slots=True)
class Reuse:
    """A verified example whose SQL answers the question, and the SQL after any value swap."""

    question: str
    sql: str
    score: float
    example_id: int
    swapped: dict[str, str] = field(default_factory=dict)  # old value -> new value

    def to_dict(self) -> dict[str, Any]:
        return {
            "example_id": self.example_id,
            "question": self.question,
            "score": self.score,
            "swapped": self.swapped,
        }


@dataclass(slots=True)
class Grounding:
    """One data source's grounding: ``values`` (the index, or a function giving it once ready) and
    its verified examples (``examples`` under the name ``source``)."""

    source: str
    values: ValueIndex | Callable[[], ValueIndex | None] | None = None
    examples: ExampleStore | None = None

    def value_index(self) -> ValueIndex | None:
        if self.values is None or not callable(self.values):
            return self.values
        return self.values()

    def hits(self, question: str, k: int = 4) -> list[ValueHit]:
        index = self.value_index()
        return index.lookup(question, k) if index is not None else []

    async def ranked(self, question: str, tables: list[TableInfo], k: int = 3) -> list[tuple[StoredExample, float]]:
        if self.examples is None:
            return []
        return await self.examples.ranked(self.source, question, k, tables=tables)


def _literals(sql: str, dialect: str) -> list[tuple[str, str]]:
    """The string literals a query compares a column with, ``column = 'v'``, ``column IN ('v', ...)``
    or ``column LIKE 'v'``: (column name, value). Function arguments (``strftime('%Y', ...)``) are not."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except SqlglotError:
        return []
    out = []
    for cmp in tree.find_all(exp.EQ, exp.NEQ, exp.Like, exp.In):
        sides = [cmp.this, *(cmp.expressions if isinstance(cmp, exp.In) else [cmp.expression])]
        column = next((s for s in sides if isinstance(s, exp.Column)), None)
        for side in sides:
            if isinstance(side, exp.Literal) and side.is_string:
                out.append((column.name if column is not None else "", str(side.this)))
    return out


def _numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(text))


_WORD = re.compile(r"[a-z]+")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")) else word


def schema_words(text: str, tables: list[TableInfo]) -> set[str]:
    """The words of ``text`` that name a table or a column (``price`` for ``unit_price``): two
    questions that mask alike but name different columns ask different things."""
    names = {_stem(w) for t in tables for n in (t.name, *(c.name for c in t.columns)) for w in _WORD.findall(n.lower())}
    return {_stem(w) for w in _WORD.findall(text.lower())} & names


def reuse(
    question: str,
    ranked: list[tuple[StoredExample, float]],
    hits: list[ValueHit],
    tables: list[TableInfo],
    *,
    threshold: float,
    dialect: str,
) -> Reuse | None:
    """The verified SQL that answers ``question`` (see the module's docstring), or ``None``."""
    if not ranked or ranked[0][1] < threshold:
        return None
    example, score = ranked[0]
    if _numbers(question) != _numbers(example.question):
        return None
    if schema_words(question, tables) != schema_words(example.question, tables):
        return None
    if question_shapes(question) & _ASKS != question_shapes(example.question) & _ASKS:
        return None  # "highest" is not "average", however alike the rest reads
    sql = example.sql
    swapped: dict[str, str] = {}
    named = {h.value.casefold() for h in hits} | {h.matched.casefold() for h in hits}
    for column, value in _literals(example.sql, dialect):
        if value.casefold() in named or value.casefold() in question.casefold():
            continue  # the new question names this value too
        # The question must name another value of the same column, confirmed by the index.
        same_column = [h for h in hits if h.column == column and h.value != value]
        if len(same_column) != 1:
            return None
        new = same_column[0].value
        old_lit, new_lit = exp.Literal.string(value).sql(dialect), exp.Literal.string(new).sql(dialect)
        if sql.count(old_lit) != 1:
            return None
        sql = sql.replace(old_lit, new_lit)
        swapped[value] = new
    return Reuse(example.question, sql, score, example.id, swapped)


def verified_examples(ranked: list[tuple[StoredExample, float]], threshold: float, k: int) -> list[Example]:
    """The verified examples close enough to show to the model, nearest last."""
    close = [ex.to_prompt() for ex, score in ranked if score >= threshold][:k]
    return list(reversed(close))
