"""Value retrieval: which values stored in a data source a question names, so the SQL filters on them.

A question says "Shanghai", "voltra" or "上海"; the database holds ``'Shanghai'`` in ``customers.city``
and ``'Voltra Phone'`` in ``products.name``. A ``ValueIndex`` holds each text column's distinct values
and finds the ones a question mentions, as hits (table, column, value, score, the part of the question
that matched) and as prompt hints (``customers.city = 'Shanghai'``).

What is read stays bounded: at most ``max_per_column`` values of a column (the most frequent first),
values of up to ``max_value_chars`` characters, at most ``max_columns`` columns, and from a table with
more than ``sample_rows`` rows only its first ``sample_rows`` rows. Numeric, date, binary and key-like
columns (names ending in ``id``) are skipped, and so are values without a letter (numbers, dates).

Matching is on character 2- and 3-grams of normalised text: NFKC (full-width letters and digits fold to
half-width), case-folded, accents on Latin letters dropped, punctuation read as spaces, word edges
marked by a space. The question gives candidate spans: quoted text, runs of one to four words that
neither start nor end with a question word ("how", "many", "total") and are not only names from the
schema, and the stretches of each CJK run that a value shares. A value is first retrieved BM25-style
through an inverted n-gram index over the whole question, then each span is scored against it: how
much of the span the value holds (precision) and how much of the value the span covers (recall), both
weighted by the n-grams' rarity, combined as ``precision ** 0.6 * recall ** 0.4``. A span equal to a
value scores 1, equal but for spaces and punctuation 0.95, any other match at most 0.94; a partial but
distinctive mention ("Voltra" for "Voltra Phone") scores about 0.75, a common word inside a longer
value well under the threshold of ``MIN_SCORE``.

``ValueIndexes`` keeps one index per data source, built in the background (database reads through
the connector's async ``run``, the indexing itself in a worker thread); ``get`` never waits for a build.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from datapilot.core.errors import DataPilotError
from datapilot.datasource import Connector, TableInfo

log = logging.getLogger("datapilot.text2sql")

MIN_SCORE = 0.7  # measured on tests/text2sql/test_values.py: see ``lookup``
EXACT_SCORE = 1.0
COMPACT_SCORE = 0.95  # equal once spaces and punctuation are dropped: "VP100" for "VP-100"
PRECISION_WEIGHT = 0.6
PARTIAL_MAX = 0.94  # a match on n-grams alone ranks below exact and compact ones, however close
CANDIDATES = 100  # values retrieved by the inverted index before spans are scored against them
MAX_SPAN_WORDS = 4
MAX_QUOTED_CHARS = 200
MAX_CJK_SPAN = 16  # longest stretch of a CJK run matched in part (exact matches have no limit)
COMMON_SHARE = 0.05  # n-grams in more values than this share (and than COMMON_MIN_DF) retrieve nothing
COMMON_MIN_DF = 1000
MIN_PARTIAL_CHARS = 3  # shorter spans match values exactly or not at all
GIVE_UP_AFTER = 3  # column reads failing in a row, none read yet, end a build

BuildProgress = Callable[[int, int, str], None]
"""``progress(done, total, "table.column")`` after each column read."""

ConnectorSource = Connector | Callable[[], Awaitable[Connector]]
"""A connector, or an async function opening one (so opening it fails inside the build, not the caller)."""


@dataclass(slots=True)
class ValueIndexOptions:
    """How much of a data source a ``ValueIndex`` reads, and how sure a hit must be."""

    max_per_column: int = 2000
    max_value_chars: int = 80
    max_columns: int = 400
    sample_rows: int = 50_000
    timeout_s: float = 30.0  # per column read
    min_score: float = MIN_SCORE


@dataclass(slots=True, frozen=True)
class ValueHit:
    """A stored value a question mentions: where it lives, how sure the match is, and the question's
    words that matched it."""

    table: str
    column: str
    value: str
    score: float
    matched: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "value": self.value,
            "score": round(self.score, 4),
            "matched": self.matched,
        }

    def condition(self, dialect: str = "sqlite") -> str:
        """The hit as a SQL condition in ``dialect``: ``customers.city = 'Shanghai'``, names quoted
        where they need it (``vx."Code"`` on PostgreSQL, which folds unquoted names to lower case)."""
        value = exp.Literal.string(self.value).sql(dialect)
        return f"{sql_name(self.table, dialect)}.{sql_name(self.column, dialect)} = {value}"


# --- text normalisation and n-grams -----------------------------------------------------------------

_CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
)
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_RUN = re.compile(f"[{_CJK}]+")
_SEPARATORS = re.compile(r"[\W_]+")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")  # "Xi'an" and "O'Brien" are one word each
_LATIN_END = "\u0250"  # combining marks after letters below this (Latin) are accents to drop


def normalize(text: str) -> str:
    """Text as the index compares it: NFKC, case-folded, Latin accents dropped, punctuation as one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if not folded.isascii():
        kept = []
        base = ""
        for ch in unicodedata.normalize("NFD", folded):
            if unicodedata.combining(ch):
                if base and base < _LATIN_END:
                    continue
            else:
                base = ch
            kept.append(ch)
        folded = unicodedata.normalize("NFC", "".join(kept))
    return _SEPARATORS.sub(" ", folded).strip()


def _is_cjk(ch: str) -> bool:
    return bool(_CJK_CHAR.match(ch))


def ngrams(key: str) -> set[str]:
    """The 2- and 3-grams of a normalised string; a space marks a word's edge (CJK has none)."""
    if not key:
        return set()
    padded = ("" if _is_cjk(key[0]) else " ") + key + ("" if _is_cjk(key[-1]) else " ")
    pairs = list(map(operator.add, padded, padded[1:]))
    grams = set(pairs)
    grams.update(map(operator.add, pairs, padded[2:]))
    return grams


# Question words: a span may hold them inside ("Bank of America") but never starts or ends with one.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at average avg be been before being
    below best between biggest both bottom but by can count counts could daily day days did different
    distinct do does done during each either every few find first for from get give given group had has
    have having he her here hers highest him his how i if in include including into is it its last least
    less list lowest many max maximum me mean median min minimum month monthly months more most much
    my name names need next no nor not number numbers of off on one only or other our out over per
    please quarter rank ranked records rows same see shall she should show smallest so some sort
    sorted sum than that the their them then there these they this those through to top total totals
    two under unique until up us was we week weekly were what when where which while who whom whose
    why will with within without would year yearly years yes yet you your
    """.split()
)
# Words that name a measure, not a thing: alone (or with the schema's words) they match a value only
# exactly ("Sales" the department), never as part of one ("Sales Representative" for "total sales").
MEASURE_WORDS = frozenset(
    """
    amount amounts bought buy cost costs earn earned earning earnings income price prices profit profits
    quantity quantities rate rates ratio revenue revenues sale sales sell selling sells share sold spend
    spending spent value values volume
    """.split()
)
# Chinese question words: a CJK stretch made only of these is no value.
CJK_STOPWORDS = frozenset(
    """
    多少 哪些 哪个 哪里 什么 怎么 如何 是否 有多少 一共 总共 总计 合计 平均 最多 最少 最高 最低 最大 最小
    所有 每个 每位 各个 数量 数目 个数 列出 显示 给出 查询 统计 的 了 吗 呢 是 有 在 和 与 及 或 个 位 名 些
    """.split()
)
# Quotation marks, Western and CJK, around a literal a question names (single quotes: see _QUOTES).
QUOTE_PAIRS = [
    ('"', '"'),
    ("\u201c", "\u201d"),
    ("\u2018", "\u2019"),
    ("\u300c", "\u300d"),
    ("\u300e", "\u300f"),
    ("\u300a", "\u300b"),
    ("\u00ab", "\u00bb"),
    ("\uff02", "\uff02"),
]
_QUOTES = re.compile(
    r"(?<!\w)'([^']+)'(?!\w)|" + "|".join(f"{re.escape(a)}([^{re.escape(b)}]+){re.escape(b)}" for a, b in QUOTE_PAIRS)
)
# What may stand between two words of one span: spaces and joiners ("VP-100", "A & B", "St. Louis").
_JOINER = re.compile(r"[\s\-'\u2019./&+#\u00b7]*")


def schema_words(tables: Sequence[TableInfo]) -> set[str]:
    """The words of table and column names, singular and plural: a question naming them means the
    schema, not a value ("customers", "order status")."""
    words: set[str] = set()
    for t in tables:
        for name in (t.name, *(c.name for c in t.columns)):
            for w in normalize(name).split():
                words.add(w)
                words.add(w[:-1] if w.endswith("s") and len(w) > 3 else w + "s")
    return words


@dataclass(slots=True)
class _Span:
    text: str  # as the question writes it
    key: str
    grams: set[str]
    exact_only: bool = False  # only schema or measure words: an exact match or none


def _weak(word: str, schema: frozenset[str]) -> bool:
    return word in STOPWORDS or word in schema or word in MEASURE_WORDS or not any(ch.isalpha() for ch in word)


def _word_spans(question: str, schema: frozenset[str]) -> list[_Span]:
    """Quoted texts and runs of one to four words, outside CJK runs."""
    spans: list[_Span] = []
    seen: set[str] = set()

    def add(text: str, exact_only: bool = False) -> None:
        key = normalize(text)
        if key and key not in seen and any(ch.isalpha() for ch in key):
            seen.add(key)
            short = len(key.replace(" ", "")) < MIN_PARTIAL_CHARS  # "VP" is no part of "VP-8888"
            spans.append(_Span(text, key, ngrams(key), exact_only or short))

    for m in _QUOTES.finditer(question):
        quoted = next(g for g in m.groups() if g is not None).strip()
        if 0 < len(quoted) <= MAX_QUOTED_CHARS:
            add(quoted)
    # Words: letter/digit runs that are not CJK, grouped into runs where only joiners separate them.
    words: list[tuple[int, int, str]] = []
    for m in _WORD.finditer(question):
        start = m.start()
        for part in _CJK_RUN.split(m.group()):
            if part:
                at = question.index(part, start)
                words.append((at, at + len(part), normalize(part)))
                start = at + len(part)
    runs: list[list[tuple[int, int, str]]] = []
    for w in words:
        if runs and _JOINER.fullmatch(question[runs[-1][-1][1] : w[0]]):
            runs[-1].append(w)
        else:
            runs.append([w])
    for run in runs:
        for i in range(len(run)):
            if run[i][2] in STOPWORDS:
                continue
            for j in range(i, min(i + MAX_SPAN_WORDS, len(run))):
                last = run[j][2]
                if last in STOPWORDS:
                    continue
                if i == j and len(last) < 2:
                    continue
                weak = all(_weak(w[2], schema) for w in run[i : j + 1])
                add(question[run[i][0] : run[j][1]], exact_only=weak)
    return spans


def _cjk_runs(question: str) -> list[str]:
    """The question's runs of CJK characters (NFKC folds half-width kana; CJK needs no other folding)."""
    return _CJK_RUN.findall(unicodedata.normalize("NFKC", question))


def _span_matrix(words: list[_Span], runs: list[str]) -> tuple[list[str], list[str], npt.NDArray[np.bool_]]:
    """The spans that may match a value in part, their n-grams, and which span holds which n-gram
    (a boolean matrix, n-grams by spans). CJK runs give every stretch of 2 to ``MAX_CJK_SPAN``
    characters, written down at once from n-gram positions rather than one set per stretch."""
    grams: dict[str, int] = {}
    texts: list[str] = []
    rows: list[int] = []
    cols: list[int] = []
    for span in words:
        if not span.exact_only:
            for g in span.grams:
                rows.append(grams.setdefault(g, len(grams)))
                cols.append(len(texts))
            texts.append(span.text)
    blocks = []
    for run in runs:
        stretches = [
            (i, j)
            for i in range(len(run) - 1)
            for j in range(i + 2, min(len(run), i + MAX_CJK_SPAN) + 1)
            if run[i:j] not in CJK_STOPWORDS
        ]
        if not stretches:
            continue
        by_width = [[grams.setdefault(run[k : k + w], len(grams)) for k in range(len(run) - w + 1)] for w in (2, 3)]
        blocks.append((len(texts), stretches, by_width))
        texts.extend(run[i:j] for i, j in stretches)
    member = np.zeros((len(grams), len(texts)), dtype=np.bool_)
    member[rows, cols] = True
    for first, stretches, by_width in blocks:
        starts = np.asarray([i for i, _ in stretches])
        ends = np.asarray([j for _, j in stretches])
        for w, gram_at in zip((2, 3), by_width, strict=True):
            at = np.arange(len(gram_at))[:, None]
            position, stretch = np.nonzero((at >= starts) & (at + w <= ends))
            member[np.asarray(gram_at, dtype=np.int64)[position], first + stretch] = True
    return texts, list(grams), member


# --- which columns and how to read them ---------------------------------------------------------------

_TEXT_TYPE = re.compile(r"char|text|clob|string|enum|citext", re.I)
_COMPOSITE_TYPE = re.compile(r"\[|array|struct|map\s*\(|union\s*\(|json", re.I)
# Names ending in "id" that are words, not keys.
_ID_WORDS = ("aid", "valid", "void", "quid", "solid", "fluid", "hybrid", "acid", "grid", "bid", "kid",
             "humid", "rapid", "vivid", "lucid", "pyramid", "droid", "avid", "timid", "tepid")  # fmt: skip


def is_text_type(type_name: str) -> bool:
    """Whether a column's declared type holds text (``VARCHAR(40)``, ``TEXT``, ``ENUM(...)``...).

    An empty or ``NULL`` type (SQLite columns and views without one) counts as text: only the string
    values it returns are kept."""
    t = type_name.strip()
    if not t or t.upper() == "NULL":
        return True
    return bool(_TEXT_TYPE.search(t)) and not _COMPOSITE_TYPE.search(t)


def is_key_like(column: str) -> bool:
    """Whether a column name looks like a key (``id``, ``customer_id``, ``CustomerID``, ``uuid``)."""
    lower = column.lower()
    if not lower.endswith("id"):
        return False
    return lower == "id" or not lower.endswith(_ID_WORDS) or lower.endswith(("_id", "-id", " id"))


def value_columns(tables: Sequence[TableInfo], max_columns: int = 400) -> list[tuple[TableInfo, str]]:
    """The (table, column) pairs worth indexing, in schema order, at most ``max_columns``."""
    out = []
    for t in tables:
        for c in t.columns:
            if is_text_type(c.type) and not is_key_like(c.name):
                out.append((t, c.name))
                if len(out) >= max_columns:
                    return out
    return out


def quote_identifier(name: str, dialect: str) -> str:
    """``name`` quoted for ``dialect``: ``"Order Lines"``, ```Order Lines``` on MySQL."""
    return exp.to_identifier(name, quoted=True).sql(dialect)


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_RESERVED = frozenset(
    """
    all and any as asc between by case check column constraint create cross default delete desc distinct
    drop else end except exists false fetch for foreign from full group having in index inner insert
    intersect into is join key left like limit natural not null offset on or order outer primary
    references right select set table then to true union unique update user using values when where
    window with
    """.split()
)


def sql_name(name: str, dialect: str) -> str:
    """``name`` as a prompt should write it: bare when it is a plain lower-case word, quoted otherwise."""
    reserved = getattr(Dialect.get_or_raise(dialect).generator_class, "RESERVED_KEYWORDS", ())
    plain = _PLAIN_NAME.fullmatch(name) and name not in _RESERVED and name not in reserved
    return exp.to_identifier(name, quoted=not plain).sql(dialect)


def distinct_values_sql(
    table: str, column: str, dialect: str, *, limit: int = 2000, sample_rows: int | None = None
) -> str:
    """A query for a column's distinct non-null values, the most frequent first, at most ``limit``;
    with ``sample_rows`` only the table's first ``sample_rows`` rows are read (a subquery with LIMIT,
    valid on SQLite, DuckDB, PostgreSQL and MySQL/MariaDB)."""
    t, c = quote_identifier(table, dialect), quote_identifier(column, dialect)
    source = f"{t} WHERE {c} IS NOT NULL"
    if sample_rows is not None:
        source = f"(SELECT {c} FROM {source} LIMIT {int(sample_rows)}) AS s"
    return f"SELECT {c} AS v, COUNT(*) AS n FROM {source} GROUP BY {c} ORDER BY n DESC, v LIMIT {int(limit)}"


def _keep(value: object, max_chars: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > max_chars or not any(ch.isalpha() for ch in text):
        return None
    return value


def _message(exc: BaseException) -> str:
    if isinstance(exc, DataPilotError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- the index ------------------------------------------------------------------------------------------


class ValueIndex:
    """The distinct text values of one data source, per column, and a fast lookup from a question.

    Build it from a connector with ``await ValueIndex.build(connector)``, or directly from
    ``(table, column, value)`` triples (tests, other stores).
    """

    def __init__(
        self,
        values: Iterable[tuple[str, str, str]],
        *,
        dialect: str = "sqlite",
        schema: Iterable[str] = (),
        min_score: float = MIN_SCORE,
    ) -> None:
        self.dialect = dialect
        self.min_score = min_score
        self.schema_words = frozenset(schema)
        self.built_at = time.time()
        self.rows_read = 0
        self.elapsed_ms = 0.0
        self.skipped: list[str] = []  # "table.column: why" for columns that could not be read
        self.truncated: list[str] = []  # "table.column" for columns with more values than were kept
        self._keys: list[str] = []
        self._sources: list[tuple[tuple[str, str, str], ...]] = []
        self._exact: dict[str, int] = {}
        self._compact: dict[str, list[int]] = {}
        columns: set[tuple[str, str]] = set()
        seen: set[tuple[str, str, str]] = set()
        self._gram_ids: dict[str, int] = {}
        gram_ids = self._gram_ids
        occurrences: list[int] = []  # gram ids of every value's n-grams, value after value
        lengths: list[int] = []  # how many n-grams each value has
        for table, column, value in values:
            entry = (table, column, value)
            key = normalize(value)
            if not key or entry in seen:
                continue
            seen.add(entry)
            columns.add((table, column))
            doc = self._exact.get(key)
            if doc is None:
                doc = len(self._keys)
                self._exact[key] = doc
                self._keys.append(key)
                self._sources.append(())
                if " " in key:
                    self._compact.setdefault(key.replace(" ", ""), []).append(doc)
                grams = ngrams(key)
                occurrences.extend([gram_ids.setdefault(g, len(gram_ids)) for g in grams])
                lengths.append(len(grams))
            self._sources[doc] += (entry,)
        self.columns = len(columns)
        self.values = len(seen)
        n = len(self._keys)
        self._unseen_idf = math.log(1 + (n + 0.5) / 0.5)
        # Postings in CSR form: the values holding gram g are _postings[_offsets[g]:_offsets[g + 1]].
        gids = np.asarray(occurrences, dtype=np.int64)
        docs = np.repeat(np.arange(n, dtype=np.int32), np.asarray(lengths, dtype=np.int64))
        df = np.bincount(gids, minlength=len(gram_ids))
        self._idf: npt.NDArray[np.float64] = np.log1p((n - df + 0.5) / (df + 0.5))
        order = np.argsort(gids, kind="stable")
        self._postings: npt.NDArray[np.int32] = docs[order]
        self._offsets: npt.NDArray[np.int64] = np.concatenate(([0], np.cumsum(df))).astype(np.int64)
        self._mass: npt.NDArray[np.float64] = np.bincount(docs, weights=self._idf[gids], minlength=n).astype(np.float64)
        self._longest = max((len(k) for k in self._keys), default=0)

    # --- building from a data source -------------------------------------------------------------------

    @classmethod
    async def build(
        cls,
        connector: Connector,
        *,
        options: ValueIndexOptions | None = None,
        progress: BuildProgress | None = None,
    ) -> ValueIndex:
        """Read the data source's text values (bounded by ``options``) and index them.

        A column that cannot be read is skipped and listed in ``skipped``; if the first
        ``GIVE_UP_AFTER`` reads (or all of them) fail, the first error is raised.
        """
        opts = options or ValueIndexOptions()
        started = time.perf_counter()
        tables = await connector.schema()
        targets = value_columns(tables, opts.max_columns)
        entries: list[tuple[str, str, str]] = []
        skipped: list[str] = []
        truncated: list[str] = []
        first_error: DataPilotError | None = None
        rows_read = 0
        for done, (table, column) in enumerate(targets, start=1):
            sample = None if table.row_count is not None and table.row_count <= opts.sample_rows else opts.sample_rows
            # One value more than is kept: the connector cuts it off and says the column had more.
            sql = distinct_values_sql(
                table.name, column, connector.dialect, limit=opts.max_per_column + 1, sample_rows=sample
            )
            try:
                result = await connector.run(sql, limit=opts.max_per_column, timeout_s=opts.timeout_s)
            except DataPilotError as exc:  # a refused or failed read (QueryError), a timeout, a dialect quirk
                first_error = first_error or exc
                skipped.append(f"{table.name}.{column}: {exc.message}")
                log.info("value index: skipped %s.%s (%s)", table.name, column, exc.message)
                if len(skipped) >= GIVE_UP_AFTER and len(skipped) == done:
                    raise first_error from None  # nothing readable so far: the source is down, not one column
            else:
                rows_read += len(result.rows)
                if result.truncated:
                    truncated.append(f"{table.name}.{column}")
                for row in result.rows:
                    kept = _keep(row[0] if row else None, opts.max_value_chars)
                    if kept is not None:
                        entries.append((table.name, column, kept))
            if progress is not None:
                progress(done, len(targets), f"{table.name}.{column}")
        if first_error is not None and len(skipped) == len(targets):
            raise first_error
        words = schema_words(tables)
        index = await asyncio.to_thread(cls, entries, dialect=connector.dialect, schema=words, min_score=opts.min_score)
        index.rows_read = rows_read
        index.skipped = skipped
        index.truncated = truncated
        index.elapsed_ms = (time.perf_counter() - started) * 1000
        return index

    # --- lookups ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.values

    def lookup(self, question: str, k: int = 5, min_score: float | None = None) -> list[ValueHit]:
        """The stored values ``question`` mentions, best first: at most ``k``, each scoring at least
        ``min_score`` (default ``MIN_SCORE``, 0.7: exact and compact matches, and partial matches on a
        distinctive part of a value, pass; a common word inside a longer value does not)."""
        threshold = self.min_score if min_score is None else min_score
        if not self._keys or k <= 0:
            return []
        words = _word_spans(question, self.schema_words)
        runs = _cjk_runs(question)
        best: dict[int, tuple[float, str]] = {}

        def offer(doc: int, score: float, matched: str) -> None:
            if score >= threshold and score > best.get(doc, (-1.0, ""))[0]:
                best[doc] = (score, matched)

        for span in words:
            doc = self._exact.get(span.key)
            if doc is not None:
                offer(doc, EXACT_SCORE, span.text)
            compact = span.key.replace(" ", "")
            for doc in self._compact.get(compact, ()):
                offer(doc, COMPACT_SCORE, span.text)
            if compact != span.key and (doc := self._exact.get(compact)) is not None:
                offer(doc, COMPACT_SCORE, span.text)  # "VP 100" for "VP100"
        for run in runs:
            for i in range(len(run) - 1):
                for j in range(i + 2, min(len(run), i + self._longest) + 1):
                    doc = self._exact.get(run[i:j])
                    if doc is not None:
                        offer(doc, EXACT_SCORE, run[i:j])

        texts, grams, member = _span_matrix(words, runs)
        if texts:
            idf = np.fromiter((self._gram_idf(g) for g in grams), dtype=np.float64, count=len(grams))
            weights = member * idf[:, None]  # n-grams x spans
            # Precision is at most 1, so a value whose n-grams the whole question covers less than this
            # much cannot reach the threshold: it is dropped before any span is scored against it.
            min_recall = max(threshold, 0.0) ** (1 / (1 - PRECISION_WEIGHT))
            docs, holds = self._candidates(grams, idf, min_recall)
            if len(docs):
                matched = holds @ weights  # candidates x spans: the weight of the n-grams both hold
                precision = matched / weights.sum(axis=0)
                recall = matched / self._mass[docs][:, None]
                scores = np.minimum(precision**PRECISION_WEIGHT * recall ** (1 - PRECISION_WEIGHT), PARTIAL_MAX)
                top = scores.argmax(axis=1)
                for doc, j, score in zip(
                    docs.tolist(), top.tolist(), scores[np.arange(len(docs)), top].tolist(), strict=True
                ):
                    offer(doc, score, texts[j])

        hits = [
            ValueHit(table, column, value, round(score, 6), matched)  # rounded: equal scores tie exactly
            for doc, (score, matched) in best.items()
            for table, column, value in self._sources[doc]
        ]
        hits.sort(key=lambda h: (-h.score, -len(h.matched), len(h.value), h.table, h.column, h.value))
        return hits[:k]

    def hints(self, question: str, k: int = 5) -> list[str]:
        """The hits as prompt lines in the index's dialect: ``customers.city = 'Shanghai'``."""
        return [h.condition(self.dialect) for h in self.lookup(question, k)]

    def summary(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "values": self.values,
            "distinct": len(self._keys),
            "rows_read": self.rows_read,
            "built_at": self.built_at,
            "elapsed_ms": round(self.elapsed_ms, 2),
            "skipped": list(self.skipped),
            "truncated": list(self.truncated),
        }

    def _gram_idf(self, gram: str) -> float:
        gid = self._gram_ids.get(gram)
        return self._unseen_idf if gid is None else float(self._idf[gid])

    def _candidates(
        self, grams: list[str], idf: npt.NDArray[np.float64], min_recall: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Values sharing the most rare n-grams with the question (BM25-style: idf summed, longer
        values discounted), at most ``CANDIDATES``, each with at least ``min_recall`` of its n-grams'
        weight among the question's; and which of the question's n-grams each holds (0/1 matrix).

        N-grams in more than ``COMMON_SHARE`` of the values (" s", "er") retrieve nothing, their long
        posting lists would cost more than the rest of a lookup, but still count for the candidates."""
        known = np.fromiter((self._gram_ids.get(g, -1) for g in grams), dtype=np.int64, count=len(grams))
        columns = np.flatnonzero(known >= 0)
        none = np.zeros(0, dtype=np.int64), np.zeros((0, len(grams)))
        starts, ends = self._offsets[known[columns]], self._offsets[known[columns] + 1]
        common = ends - starts > max(COMMON_MIN_DF, COMMON_SHARE * len(self._keys))
        rare = np.flatnonzero(~common)
        if not len(rare):
            return none
        docs = np.concatenate(
            [self._postings[s:e] for s, e in zip(starts[rare].tolist(), ends[rare].tolist(), strict=True)]
        )
        column_of = np.repeat(columns[rare], ends[rare] - starts[rare])
        shared = np.bincount(docs, weights=idf[column_of], minlength=len(self._keys))
        at_most = shared + idf[columns[common]].sum()
        found = np.flatnonzero((shared > 0) & (at_most >= self._mass * min_recall - 1e-9))
        if len(found) > CANDIDATES:
            score = shared[found] ** 2 / self._mass[found]  # shared weight times the share of the value
            found = found[np.argpartition(-score, CANDIDATES)[:CANDIDATES]]
        if not len(found):
            return none
        found.sort()
        row = np.full(len(self._keys), -1, dtype=np.int64)
        row[found] = np.arange(len(found))
        keep = row[docs] >= 0
        holds = np.zeros((len(found), len(grams)))
        holds[row[docs[keep]], column_of[keep]] = 1.0
        for column, s, e in zip(columns[common].tolist(), starts[common].tolist(), ends[common].tolist(), strict=True):
            posting = self._postings[s:e]  # sorted by value
            at = np.minimum(np.searchsorted(posting, found), len(posting) - 1)
            holds[posting[at] == found, column] = 1.0
        return found.astype(np.int64), holds


# --- one index per data source, built in the background ------------------------------------------------


@dataclass(slots=True)
class _Entry:
    state: str = "building"
    index: ValueIndex | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None
    generation: int = 0
    started_at: float = 0.0
    progress: tuple[int, int] = (0, 0)


@dataclass(slots=True)
class ValueIndexes:
    """Value indexes by data source name, built in the background and swapped in when ready.

    ``ensure`` starts a build the first time a source is named, ``refresh`` starts a new one (the old
    index keeps serving until the new one is ready), ``get`` returns the ready index or ``None`` and
    never waits. At most ``max_parallel`` builds read from databases at once.
    """

    options: ValueIndexOptions = field(default_factory=ValueIndexOptions)
    max_parallel: int = 2
    _entries: dict[str, _Entry] = field(default_factory=dict, repr=False)
    _gate: asyncio.Semaphore | None = field(default=None, repr=False)

    def ensure(self, name: str, connector: ConnectorSource) -> dict[str, Any]:
        """Start building ``name``'s index unless it is built, building, or failed; return its status."""
        if name not in self._entries:
            return self.refresh(name, connector)
        return self._status(name, self._entries[name])

    def refresh(self, name: str, connector: ConnectorSource) -> dict[str, Any]:
        """Start a new build of ``name``'s index (a build under way is cancelled); return the status."""
        entry = self._entries.setdefault(name, _Entry())
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
        entry.generation += 1
        entry.state, entry.error, entry.started_at, entry.progress = "building", None, time.time(), (0, 0)
        entry.task = asyncio.get_running_loop().create_task(
            self._build(name, entry, entry.generation, connector), name=f"value-index:{name}"
        )
        return self._status(name, entry)

    def get(self, name: str) -> ValueIndex | None:
        entry = self._entries.get(name)
        return entry.index if entry is not None else None

    def status(self, name: str) -> dict[str, Any] | None:
        """``{"state": "building"|"ready"|"failed", "columns", "values", "built_at", "error", ...}``,
        or ``None`` for a source never asked for."""
        entry = self._entries.get(name)
        return None if entry is None else self._status(name, entry)

    def drop(self, name: str) -> None:
        """Forget ``name``'s index, cancelling its build."""
        entry = self._entries.pop(name, None)
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.task.cancel()

    async def wait(self, name: str) -> ValueIndex | None:
        """Wait for ``name``'s build (and any refresh started meanwhile) to end; the ready index or ``None``."""
        while (entry := self._entries.get(name)) is not None and entry.task is not None and not entry.task.done():
            await asyncio.wait({entry.task})  # neither raises the build's error nor cancels it
        return self.get(name)

    async def close(self) -> None:
        tasks = [e.task for e in self._entries.values() if e.task is not None and not e.task.done()]
        self._entries.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _status(self, name: str, entry: _Entry) -> dict[str, Any]:
        index = entry.index
        return {
            "name": name,
            "state": entry.state,
            "columns": index.columns if index is not None else 0,
            "values": index.values if index is not None else 0,
            "built_at": index.built_at if index is not None else None,
            "error": entry.error,
            "progress": {"done": entry.progress[0], "total": entry.progress[1]},
            "skipped": list(index.skipped) if index is not None else [],
        }

    async def _build(self, name: str, entry: _Entry, generation: int, source: ConnectorSource) -> None:
        def current() -> bool:
            return self._entries.get(name) is entry and entry.generation == generation

        def progress(done: int, total: int, _column: str) -> None:
            if current():
                entry.progress = (done, total)

        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_parallel)
        try:
            async with self._gate:
                connector = source if isinstance(source, Connector) else await source()
                index = await ValueIndex.build(connector, options=self.options, progress=progress)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported in the status; the request path never sees it
            if current():
                entry.state, entry.error = "failed", _message(exc)
            log.warning("value index for %s failed: %s", name, _message(exc))
            return
        if current():
            entry.index, entry.state, entry.error = index, "ready", None
            log.info("value index for %s: %d values in %d columns", name, index.values, index.columns)
