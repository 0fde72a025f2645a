"""Worked examples chosen for the question: a pool written from the schema, the closest few shown.

Small models copy the shape of the examples they are shown more than they follow the question: a
prompt whose only join example filters customers by region gets that join back for a question about
products. So the pool covers the shapes analysts ask for (counts, counts per group, aggregates, top
N, filters on a real value, joins along foreign keys, totals per joined group, rows without a match,
above the average, a year's rows, distinct counts), over the linked tables' own names and sample
values, in English and Chinese; each question picks the examples that share its cue words ("how
many", "each", "highest", "never", 多少, 每个, 最高 ...) and its table and column words, and the
closest comes last, nearest the question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datapilot.datasource import TableInfo
from datapilot.text2sql._grammar import table_aliases
from datapilot.text2sql._linking import _words
from datapilot.text2sql._prompt import Example, _is_number, _is_text

# The shape of the SQL an example shows, and the words (English, Chinese) that ask for that shape.
CUES: dict[str, tuple[str, ...]] = {
    "count": ("how many", "number of", "count", "多少", "几", "数量"),
    "group": ("each", " per ", "every", "for every", "每个", "每", "各", "分别", "按"),
    "avg": ("average", "mean", "平均"),
    "sum": ("total", "sum", "overall", "revenue", "sales", "总", "合计", "销售额"),
    "min": ("lowest", "minimum", "smallest", "cheapest", "least", "最低", "最小", "最少", "最便宜"),
    "max": ("highest", "maximum", "largest", "most", "biggest", "最高", "最大", "最多", "最贵"),
    "top": ("top", "most", "highest", "largest", "first", "best", "前", "最"),
    "filter": ("whose", "where", " with ", "为"),
    "join": ("their", " of each ", "给出", "的名称"),
    "none": ("never", "no ", "without", "not", "没有", "从未", "未"),
    "above": ("above", "more than the average", "higher than the average", "高于", "超过平均"),
    "year": ("in 20", "year", "年"),
    "distinct": ("different", "distinct", "unique", "不同"),
    "list": ("list", "show", "which", "what are", "列出", "哪些", "显示"),
}

_YEAR = re.compile(r"\b(19|20)\d\d\b|(19|20)\d\d年")


@dataclass(slots=True, frozen=True)
class Shot:
    """One pooled example: the example, the shapes it shows and the schema words it uses."""

    example: Example
    shapes: frozenset[str]
    words: frozenset[str]


def _is_date(name: str, type_name: str) -> bool:
    return "DATE" in type_name.upper() or "TIME" in type_name.upper() or name.lower().endswith(("_date", "_at"))


def _quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _human(name: str) -> str:
    return name.replace("_", " ")


class _Pool:
    def __init__(self, tables: list[TableInfo], dialect: str) -> None:
        self.tables, self.dialect = tables, dialect
        self.by_name = {t.name: t for t in tables}
        self.aliases = table_aliases(tables)
        self.out: list[Shot] = []

    def add(self, shapes: str, en: str, zh: str | None, sql: str, *names: str) -> None:
        words = frozenset(w for n in names for w in _words(n))
        for question in (en, zh):
            if question:
                self.out.append(Shot(Example(question, sql), frozenset(shapes.split()), words))

    def label(self, t: TableInfo) -> str | None:
        """A column that names a row: the first non-key text column."""
        keys = {c for fk in t.foreign_keys for c in fk.columns}
        for c in t.columns:
            if _is_text(c.type) and not c.primary_key and c.name not in keys and not _is_date(c.name, c.type):
                return c.name
        return None

    def numbers(self, t: TableInfo) -> list[str]:
        keys = {c for fk in t.foreign_keys for c in fk.columns}
        return [
            c.name
            for c in t.columns
            if _is_number(c.type) and not c.primary_key and c.name not in keys and not c.name.lower().endswith("id")
        ]

    def categories(self, t: TableInfo) -> list[tuple[str, object]]:
        """Text columns with sample values that look like categories (short, repeated labels)."""
        label = self.label(t)
        out: list[tuple[str, object]] = []
        for c in t.columns:
            if _is_text(c.type) and not c.primary_key and c.samples and not _is_date(c.name, c.type):
                if c.name != label or len(out) == 0:
                    out.append((c.name, c.samples[0]))
        return out

    def year_expr(self, column: str) -> str:
        if self.dialect == "sqlite":
            return f"strftime('%Y', {column})"
        return f"EXTRACT(YEAR FROM {column})"

    def single(self, t: TableInfo) -> None:
        n, hn = t.name, _human(t.name)
        self.add("count", f"How many {hn} are there?", f"{hn}有多少个?", f"SELECT COUNT(*) FROM {n}", n)
        label, numbers, cats = self.label(t), self.numbers(t), self.categories(t)
        for col, value in cats[:2]:
            hc = _human(col)
            self.add(
                "count group", f"How many {hn} are there for each {hc}?", f"每个{hc}有多少{hn}?",
                f"SELECT {col}, COUNT(*) FROM {n} GROUP BY {col}", n, col,
            )  # fmt: skip
            self.add(
                "count filter", f"How many {hn} have {hc} {value}?", f"{hc}为{value}的{hn}有多少?",
                f"SELECT COUNT(*) FROM {n} WHERE {col} = {_quote(value)}", n, col,
            )  # fmt: skip
            if label and label != col:
                self.add(
                    "list filter", f"List the {_human(label)} of {hn} whose {hc} is {value}.",
                    f"列出{hc}为{value}的{hn}的{_human(label)}。",
                    f"SELECT {label} FROM {n} WHERE {col} = {_quote(value)}", n, col, label,
                )  # fmt: skip
        for col in numbers[:2]:
            hc = _human(col)
            for fn, shape, en, zh in (
                ("AVG", "avg", "average", "平均"),
                ("SUM", "sum", "total", "总"),
                ("MAX", "max", "highest", "最高"),
                ("MIN", "min", "lowest", "最低"),
            ):
                self.add(shape, f"What is the {en} {hc} of {hn}?", f"{hn}的{zh}{hc}是多少?",
                         f"SELECT {fn}({col}) FROM {n}", n, col)  # fmt: skip
            if label:
                self.add(
                    "top list max", f"List the 3 {hn} with the highest {hc}, with their {hc}.",
                    f"{hc}最高的3个{hn}是哪些?",
                    f"SELECT {label}, {col} FROM {n} ORDER BY {col} DESC LIMIT 3", n, col, label,
                )  # fmt: skip
                self.add(
                    "top max", f"Which {hn} has the highest {hc}?", f"哪个{hn}的{hc}最高?",
                    f"SELECT {label} FROM {n} ORDER BY {col} DESC LIMIT 1", n, col, label,
                )  # fmt: skip
                self.add(
                    "above avg list", f"Which {hn} have a {hc} above the average?", f"{hc}高于平均值的{hn}有哪些?",
                    f"SELECT {label} FROM {n} WHERE {col} > (SELECT AVG({col}) FROM {n})", n, col, label,
                )  # fmt: skip
            for cat, _ in cats[:1]:
                hk = _human(cat)
                self.add(
                    "avg group", f"What is the average {hc} for each {hk}?", f"每个{hk}的平均{hc}是多少?",
                    f"SELECT {cat}, AVG({col}) FROM {n} GROUP BY {cat}", n, col, cat,
                )  # fmt: skip
                self.add(
                    "sum group top", f"Which {hk} has the largest total {hc}?", f"哪个{hk}的{hc}总和最大?",
                    f"SELECT {cat}, SUM({col}) FROM {n} GROUP BY {cat} ORDER BY SUM({col}) DESC LIMIT 1",
                    n, col, cat,
                )  # fmt: skip
        for c in t.columns:
            if _is_date(c.name, c.type):
                hc = _human(c.name)
                self.add(
                    "count year filter", f"How many {hn} have a {hc} in 2024?", f"2024年有多少{hn}?",
                    f"SELECT COUNT(*) FROM {n} WHERE {self.year_expr(c.name)} = '2024'", n, c.name,
                )  # fmt: skip
                break
        for col, _ in cats[:1]:
            hc = _human(col)
            self.add(
                "count distinct", f"How many different {hc} values do {hn} have?", f"{hn}有多少个不同的{hc}?",
                f"SELECT COUNT(DISTINCT {col}) FROM {n}", n, col,
            )  # fmt: skip

    def joined(self, t: TableInfo) -> None:
        """Examples over ``t`` and each table its foreign keys point to."""
        for fk in t.foreign_keys:
            ref = self.by_name.get(fk.ref_table)
            if ref is None or ref is t or len(fk.columns) != 1:
                continue
            a, b = self.aliases[t.name], self.aliases[ref.name]
            on = f"{t.name} AS {a} JOIN {ref.name} AS {b} ON {a}.{fk.columns[0]} = {b}.{fk.ref_columns[0]}"
            ht, hr = _human(t.name), _human(ref.name)
            label, ref_label = self.label(t), self.label(ref)
            if ref_label:
                hl = _human(ref_label)
                self.add(
                    "count group join", f"How many {ht} does each {hr} have? Give the {hr} {hl}.",
                    f"每个{hr}有多少{ht}?给出{hr}的{hl}。",
                    f"SELECT {b}.{ref_label}, COUNT(*) FROM {on} GROUP BY {b}.{ref_label}", t.name, ref.name, ref_label,
                )  # fmt: skip
                for col in self.numbers(t)[:1]:
                    hc = _human(col)
                    self.add(
                        "sum group join top", f"What is the total {hc} of {ht} for each {hr} {hl}?",
                        f"每个{hr}的{ht}{hc}总和是多少?",
                        f"SELECT {b}.{ref_label}, SUM({a}.{col}) FROM {on} GROUP BY {b}.{ref_label} "
                        f"ORDER BY SUM({a}.{col}) DESC", t.name, ref.name, col, ref_label,
                    )  # fmt: skip
                for col in self.numbers(ref)[:1]:
                    hc = _human(col)
                    self.add(
                        "sum join", f"What is the total {hc} over all {ht}?", f"所有{ht}的{hc}总和是多少?",
                        f"SELECT SUM({b}.{col}) FROM {on}", t.name, ref.name, col,
                    )  # fmt: skip
                self.add(
                    "none list", f"Which {hr} have no {ht}?", f"哪些{hr}没有{ht}?",
                    f"SELECT {ref_label} FROM {ref.name} WHERE {fk.ref_columns[0]} NOT IN "
                    f"(SELECT {fk.columns[0]} FROM {t.name} WHERE {fk.columns[0]} IS NOT NULL)", t.name, ref.name,
                )  # fmt: skip
            for col, value in self.categories(ref)[:1]:
                shown = label or next((c.name for c in t.columns if not c.primary_key), None)
                if shown is None:
                    continue
                hc = _human(col)
                self.add(
                    "list filter join", f"List the {_human(shown)} of {ht} whose {hr} {hc} is {value}.",
                    f"列出{hr}{hc}为{value}的{ht}的{_human(shown)}。",
                    f"SELECT {a}.{shown} FROM {on} WHERE {b}.{col} = {_quote(value)}", t.name, ref.name, col, shown,
                )  # fmt: skip
                self.add(
                    "count filter join", f"How many {ht} are there whose {hr} {hc} is {value}?",
                    f"{hr}{hc}为{value}的{ht}有多少?",
                    f"SELECT COUNT(*) FROM {on} WHERE {b}.{col} = {_quote(value)}", t.name, ref.name, col,
                )  # fmt: skip


def example_pool(tables: list[TableInfo], dialect: str) -> list[Shot]:
    """Worked examples of the usual shapes over ``tables``, in English and Chinese."""
    pool = _Pool(tables, dialect)
    for t in tables:
        pool.single(t)
    for t in tables:
        pool.joined(t)
    seen: set[tuple[str, str]] = set()
    out = []
    for shot in pool.out:
        key = (shot.example.question, shot.example.sql)
        if key not in seen:
            seen.add(key)
            out.append(shot)
    return out


def question_shapes(question: str) -> set[str]:
    """The shapes ``question``'s cue words ask for (``count``, ``group``, ``avg``, ``top`` ...)."""
    text = " " + question.lower() + " "
    found = {shape for shape, cues in CUES.items() if any(c in text for c in cues)}
    if _YEAR.search(question):
        found.add("year")
    return found


def _cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _score(shot: Shot, shapes: set[str], words: set[str], chinese: bool) -> float:
    shape_hits = len(shapes & shot.shapes) - 0.5 * len(shot.shapes - shapes)
    word_hits = len(words & shot.words)
    language = 0.5 if _cjk(shot.example.question) == chinese else 0.0
    return 2.0 * shape_hits + 1.5 * word_hits + language


def pick_examples(question: str, pool: list[Shot], k: int = 4) -> list[Example]:
    """The ``k`` pooled examples closest to ``question`` (its shape cues and schema words), at most
    one per SQL and two per shape set, the closest last."""
    shapes, words, chinese = question_shapes(question), _words(question), _cjk(question)
    ranked = sorted(pool, key=lambda s: -_score(s, shapes, words, chinese))
    chosen: list[Shot] = []
    sqls: set[str] = set()
    per_shape: dict[frozenset[str], int] = {}
    for shot in ranked:
        if shot.example.sql in sqls or per_shape.get(shot.shapes, 0) >= 2:
            continue
        chosen.append(shot)
        sqls.add(shot.example.sql)
        per_shape[shot.shapes] = per_shape.get(shot.shapes, 0) + 1
        if len(chosen) == k:
            break
    return [s.example for s in reversed(chosen)]
