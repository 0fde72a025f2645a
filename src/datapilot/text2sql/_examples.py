"""The example store: verified question -> SQL pairs per data source ("train it on your database").

People confirm an answer (thumbs up, ``datapilot db examples add``, an imported file) and the pair is
kept as a worked example for the model; a thumbs down is kept too, as a pair known to be wrong, and is
never shown. A verified pair must be one read-only query that runs on its source, or nothing is stored.

``similar`` finds the examples nearest a new question. Questions are compared with their specifics
masked: words naming tables and columns become ``[TABLE]`` / ``[COLUMN]``, and values (quoted text,
numbers, known sample values, capitalised names inside a sentence) become ``[VALUE]``, so "orders
shipped to Berlin" finds "orders shipped to Paris". With an embedder the masked questions are compared
by cosine similarity, each example's vector embedded once and kept (in memory and in the store, keyed
by the embedder and the masked text); without one, by the overlap of their words and character n-grams.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import itertools
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from datapilot.core.errors import InvalidRequestError
from datapilot.datasource import Connector, TableInfo, check_read_only
from datapilot.text2sql._prompt import Example
from datapilot.text2sql._values import QUOTE_PAIRS

if TYPE_CHECKING:
    from datapilot.cache import Embedder

VALUE, TABLE, COLUMN = "[VALUE]", "[TABLE]", "[COLUMN]"
MAX_QUESTION_CHARS = 2000
MAX_SQL_CHARS = 20_000

# Private-use characters stand for the slots while masking, so later rules never match inside them.
_V, _T, _C = "\ue000", "\ue001", "\ue002"
_SLOTS = {_V: VALUE, _T: TABLE, _C: COLUMN}


@dataclass(slots=True, frozen=True)
class StoredExample:
    """One question -> SQL pair of a data source. ``verified`` pairs are shown to the model; the others
    were rated wrong and are kept only as a record."""

    id: int
    source: str
    question: str
    sql: str
    verified: bool = True
    note: str = ""
    created_at: float = 0.0

    def to_prompt(self) -> Example:
        return Example(self.question, self.sql)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "question": self.question,
            "sql": self.sql,
            "verified": self.verified,
            "note": self.note,
            "created_at": self.created_at,
        }


# --- masking ------------------------------------------------------------------------------------------------

# Quoted text in ASCII, typographic and CJK quotes (written as escapes: several look like ASCII ones).
_QUOTE_PAIRS = (("'", "'"), *QUOTE_PAIRS)
_QUOTED = re.compile(
    "|".join(
        rf"(?<!\w){re.escape(a)}[^{re.escape(b)}\n]+{re.escape(b)}(?!\w)" if a in "'\"" else f"{a}[^{b}\\n]+{b}"
        for a, b in _QUOTE_PAIRS
    )
)
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:[.,:/-]\d+)*%?")
_CAPITALISED = re.compile(r"(?<![\w'])[A-Z][A-Za-z0-9&'-]*")
_SENTENCE_END = ".!?:;\n\u3002\uff01\uff1f\uff1a\uff1b"
_OPENERS = "\"'(" + "".join(a for a, _ in _QUOTE_PAIRS[2:])
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SHORT_COMMENT = re.compile(r"^(?:[A-Za-z]+(?: [A-Za-z]+){0,2}|[\u3400-\u9fff]{1,10})$")
# Words that carry a question's structure: never masked, whatever a schema calls its columns.
_KEEP = frozenset(
    "a an the of in on at by to for from with and or not no is are was were be how many much what which who "
    "whose when where why per each every all any top list show give find count number total sum average avg "
    "mean max maximum min minimum most least first last more less than".split()
)


def _name_words(name: str) -> str:
    """``order_items`` / ``OrderItems`` -> ``order items``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return " ".join(w for w in re.split(r"[\s_\-.]+", spaced) if w).lower()


def _inflections(phrase: str) -> set[str]:
    """A phrase with its last word in singular and plural forms (customer ~ customers, category ~ categories)."""
    head, _, last = phrase.rpartition(" ")
    forms = {last}
    if _CJK.search(last) or not last.isalpha():
        return {phrase}
    if last.endswith("ies") and len(last) > 4:
        forms.add(last[:-3] + "y")
    elif last.endswith("ses") or last.endswith("xes") or last.endswith("ches") or last.endswith("shes"):
        forms.add(last[:-2])
    elif last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        forms.add(last[:-1])
    if last.endswith("y") and len(last) > 2 and last[-2] not in "aeiou":
        forms.add(last[:-1] + "ies")
    elif last.endswith(("s", "x", "ch", "sh")):
        forms.add(last + "es")
    else:
        forms.add(last + "s")
    return {f"{head} {f}" if head else f for f in forms}


def _term_pattern(term: str) -> str:
    body = r"\s+".join(re.escape(w) for w in term.split())
    # ASCII words need word edges ("order" is not inside "border"); CJK text has no spaces to find.
    before = r"(?<![A-Za-z0-9_])" if term[:1].isascii() else ""
    after = r"(?![A-Za-z0-9_])" if term[-1:].isascii() else ""
    return before + body + after


class QuestionMasker:
    """Masks a question's schema words and values, from one source's tables (or none)."""

    def __init__(self, tables: Sequence[TableInfo] = ()) -> None:
        terms: dict[str, str] = {}

        def add(term: str, slot: str) -> None:
            term = " ".join(term.lower().split())
            if len(term) < 2 and not _CJK.search(term):
                return
            if term in _KEEP or term.isdigit():
                return
            terms.setdefault(term, slot)  # tables first, then columns, then values

        for t in tables:
            for form in _inflections(_name_words(t.name)):
                add(form, _T)
            if t.comment and _SHORT_COMMENT.match(t.comment.strip()):
                add(t.comment, _T)
        for t in tables:
            for c in t.columns:
                for form in _inflections(_name_words(c.name)):
                    add(form, _C)
                if c.comment and _SHORT_COMMENT.match(c.comment.strip()):
                    add(c.comment, _C)
        for t in tables:
            for c in t.columns:
                for v in c.samples:
                    if isinstance(v, str) and 2 <= len(v.strip()) <= 40 and not _NUMBER.fullmatch(v.strip()):
                        add(v, _V)
        self._slots = terms
        ordered = sorted(terms, key=len, reverse=True)  # the longest term wins: "unit price" before "unit"
        self._terms = re.compile("|".join(_term_pattern(t) for t in ordered), re.IGNORECASE) if ordered else None

    def mask(self, question: str) -> str:
        text = _QUOTED.sub(_V, question)
        if self._terms is not None:
            text = self._terms.sub(lambda m: self._slots.get(" ".join(m.group(0).lower().split()), _V), text)
        text = _NUMBER.sub(_V, text)
        text = _CAPITALISED.sub(lambda m: _V if self._names_a_value(text, m) else m.group(0), text)
        text = re.sub(f"{_V}(?:\\s+{_V})+", _V, text)  # "New York" is one value
        text = text.lower()
        text = re.sub(r"(?<=\w)'(?=\w)", "", text)  # what's -> whats
        text = re.sub(f"[^\\w\\s{_V}{_T}{_C}]", " ", text)
        text = " ".join(text.split())
        for slot, token in _SLOTS.items():
            text = text.replace(slot, token)
        return text

    @staticmethod
    def _names_a_value(text: str, match: re.Match[str]) -> bool:
        word = match.group(0)
        if word == "I" or word.startswith("I'"):
            return False
        before = text[: match.start()].rstrip().rstrip(_OPENERS).rstrip()
        return bool(before) and before[-1] not in _SENTENCE_END


def mask_question(question: str, tables: Sequence[TableInfo] = ()) -> str:
    """``question`` with its tables, columns and values masked, lower-cased, punctuation dropped:
    "How many orders were shipped to Berlin?" -> "how many [TABLE] were shipped to [VALUE]"."""
    return QuestionMasker(tables).mask(question)


_NO_SCHEMA = QuestionMasker()


# --- lexical similarity (no embedder) -----------------------------------------------------------------------

_TOKEN = re.compile(r"\[(?:VALUE|TABLE|COLUMN)\]|[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+")


def _features(masked: str) -> frozenset[str]:
    """Words and word pairs (CJK: characters and character pairs), plus character 3-grams of longer
    words so that "ship" and "shipped" overlap."""
    tokens = _TOKEN.findall(masked)
    out: set[str] = set(tokens)
    out.update(f"{a} {b}" for a, b in itertools.pairwise(tokens))
    for tok in tokens:
        if len(tok) > 3 and tok.isascii() and tok.isalnum():
            padded = f"#{tok}#"
            out.update(f"~{padded[i : i + 3]}" for i in range(len(padded) - 2))
    return frozenset(out)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


# --- reading files ------------------------------------------------------------------------------------------


def read_examples(path: Path) -> list[dict[str, Any]]:
    """Question/SQL records from a file: a JSON list of ``{"question", "sql"}`` objects, Spider-format
    JSON (``question`` / ``query``), JSON Lines, or CSV with ``question`` and ``sql`` (or ``query``) columns."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror or exc}", param="file") from None
    if path.suffix.lower() in (".csv", ".tsv"):
        dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        fields = {(f or "").strip().lower() for f in reader.fieldnames or []}
        if "question" not in fields or not fields & {"sql", "query"}:
            raise InvalidRequestError(
                f"{path.name}: a CSV file of examples needs the columns question and sql (got: "
                f"{', '.join(sorted(fields)) or 'none'})",
                param="file",
            )
        return [{(k or "").strip().lower(): v for k, v in row.items()} for row in reader]
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"{path.name} is not valid JSON: {exc}", param="file") from None
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        data = data["examples"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise InvalidRequestError(
            f"{path.name}: expected a JSON list of objects with question and sql (or Spider's query)", param="file"
        )
    return data


# --- the store ----------------------------------------------------------------------------------------------


class ExampleStore:
    """Examples in the metadata store (a SQLAlchemy database; SQLite under DATAPILOT_HOME by default).

    ``add``, ``import_examples`` / ``import_file`` and ``similar`` are coroutines (they may run a query or
    an embedder); ``list``, ``get`` and ``remove`` are plain calls. Give ``add`` a connector and a verified
    pair must also run on it. Give the store an ``Embedder`` and ``similar`` compares by embeddings.
    """

    def __init__(self, url: str, *, embedder: Embedder | None = None) -> None:
        self.url = url
        self.embedder = embedder
        self._engine: Engine = create_engine(url)
        meta = MetaData()
        self._table = Table(
            "sql_examples",
            meta,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("source", String(64), nullable=False),
            Column("question", Text, nullable=False),
            Column("sql", Text, nullable=False),
            Column("verified", Boolean, nullable=False),
            Column("note", Text, nullable=False, default=""),
            Column("created_at", Float, nullable=False),
            # The question's embedding: which embedder and masked text it is of, then the float32 bytes.
            Column("vector_key", String(160), nullable=True),
            Column("vector", LargeBinary, nullable=True),
            Index("ix_sql_examples_source", "source", "verified"),
        )
        meta.create_all(self._engine)
        self._maskers: dict[str, QuestionMasker] = {}
        self._masked: dict[str, dict[str, str]] = {}  # source -> question -> masked
        self._vectors: dict[int, tuple[str, np.ndarray]] = {}  # example id -> (vector key, vector)

    @classmethod
    def at_home(cls, home: Path, *, embedder: Embedder | None = None) -> ExampleStore:
        """The store in ``home/metadata.db``, next to the data source definitions."""
        home.mkdir(parents=True, exist_ok=True)
        path = home / "metadata.db"
        fresh = not path.exists()
        store = cls(f"sqlite:///{path}", embedder=embedder)
        if fresh:
            os.chmod(path, 0o600)  # the same file holds data source passwords
        return store

    # --- schema for masking

    def set_schema(self, source: str, tables: Sequence[TableInfo]) -> None:
        """The tables whose names and sample values ``similar`` masks in ``source``'s questions."""
        self._maskers[source] = QuestionMasker(tables)
        self._masked.pop(source, None)

    def has_schema(self, source: str) -> bool:
        return source in self._maskers

    def mask(self, source: str, question: str) -> str:
        """``question`` masked with ``source``'s schema (values only, until ``set_schema``)."""
        return self._maskers.get(source, _NO_SCHEMA).mask(question)

    # --- reading

    def list(self, source: str, *, verified: bool | None = None) -> builtins.list[StoredExample]:
        query = self._columns().where(self._table.c.source == source)
        if verified is not None:
            query = query.where(self._table.c.verified == verified)
        with self._engine.connect() as conn:
            return [self._example(r) for r in conn.execute(query.order_by(self._table.c.id))]

    def get(self, id: int) -> StoredExample | None:
        with self._engine.connect() as conn:
            row = conn.execute(self._columns().where(self._table.c.id == id)).first()
        return None if row is None else self._example(row)

    # --- writing

    async def add(
        self,
        source: str,
        question: str,
        sql: str,
        *,
        verified: bool = True,
        note: str = "",
        connector: Connector | None = None,
        timeout_s: float = 30.0,
    ) -> StoredExample:
        """Store a pair (verified: shown as an example; not: recorded as wrong) and return it.

        A verified pair must be one read-only query and, given ``connector``, run there (one row at most,
        within ``timeout_s``); otherwise ``InvalidRequestError`` and nothing is stored. The same question
        and SQL stored again update the existing example's rating (and note, if given) instead.
        """
        question, sql = await self._checked(source, question, sql, verified, connector, timeout_s)
        with self._engine.begin() as conn:
            return self._put(conn, source, question, sql, verified, note)

    async def import_examples(
        self,
        source: str,
        items: Iterable[Mapping[str, Any]],
        *,
        connector: Connector | None = None,
        timeout_s: float = 30.0,
    ) -> builtins.list[StoredExample]:
        """Store many verified pairs (``question`` plus ``sql`` or Spider's ``query``, optional ``note``):
        all of them, or, when any fails the checks, none (the error names the item)."""
        checked: list[tuple[str, str, str]] = []
        for n, item in enumerate(items, 1):
            if not isinstance(item, Mapping):
                raise InvalidRequestError(f"example {n}: expected an object with question and sql", param="examples")
            sql = item.get("sql", item.get("query"))
            try:
                question, clean = await self._checked(
                    source, str(item.get("question") or ""), str(sql or ""), True, connector, timeout_s
                )
            except InvalidRequestError as exc:
                raise type(exc)(f"example {n}: {exc.message}", param=exc.param, code=exc.code) from None
            checked.append((question, clean, str(item.get("note") or "")))
        if not checked:
            raise InvalidRequestError("there are no examples to import", param="examples")
        with self._engine.begin() as conn:
            return [self._put(conn, source, q, s, True, note) for q, s, note in checked]

    async def import_file(
        self, source: str, path: Path | str, *, connector: Connector | None = None, timeout_s: float = 30.0
    ) -> builtins.list[StoredExample]:
        """``import_examples`` from a JSON, Spider JSON, JSON Lines or CSV file (see ``read_examples``)."""
        return await self.import_examples(source, read_examples(Path(path)), connector=connector, timeout_s=timeout_s)

    def remove(self, source: str, id: int) -> bool:
        with self._engine.begin() as conn:
            gone = conn.execute(delete(self._table).where(self._table.c.source == source, self._table.c.id == id))
        self._vectors.pop(id, None)
        return bool(gone.rowcount)

    def forget_source(self, source: str) -> int:
        """Remove every example of ``source`` (the source itself was removed); returns how many."""
        ids = [e.id for e in self.list(source)]
        with self._engine.begin() as conn:
            conn.execute(delete(self._table).where(self._table.c.source == source))
        for id in ids:
            self._vectors.pop(id, None)
        self._maskers.pop(source, None)
        self._masked.pop(source, None)
        return len(ids)

    # --- retrieval

    async def similar(
        self, source: str, question: str, k: int = 3, *, tables: Sequence[TableInfo] | None = None
    ) -> builtins.list[StoredExample]:
        """The ``k`` verified examples of ``source`` whose masked questions are nearest ``question``'s."""
        return [ex for ex, _ in await self.ranked(source, question, k, tables=tables)]

    async def ranked(
        self, source: str, question: str, k: int = 3, *, tables: Sequence[TableInfo] | None = None
    ) -> builtins.list[tuple[StoredExample, float]]:
        """``similar`` with each example's score (cosine with an embedder, Jaccard without), best first."""
        if tables is not None:
            self.set_schema(source, tables)
        examples = self.list(source, verified=True)
        if not examples or k <= 0:
            return []
        masked = [self._masked_question(source, ex.question) for ex in examples]
        query = self.mask(source, question)
        if self.embedder is None:
            q = _features(query)
            scores = np.array([_jaccard(q, _features(m)) for m in masked], dtype=np.float32)
        else:
            matrix = await self._matrix(examples, masked)
            scores = matrix @ (await self.embedder.embed([query]))[0]
        order = sorted(range(len(examples)), key=lambda i: (-float(scores[i]), -examples[i].id))
        return [(examples[i], round(float(scores[i]), 4)) for i in order[:k] if self.embedder or scores[i] > 0]

    async def _matrix(self, examples: builtins.list[StoredExample], masked: builtins.list[str]) -> np.ndarray:
        """The examples' vectors: kept in memory, else read from the store, else embedded (and stored)."""
        assert self.embedder is not None
        name = getattr(self.embedder, "name", type(self.embedder).__name__)
        keys = [f"{name}:{hashlib.sha256(m.encode()).hexdigest()[:32]}" for m in masked]
        missing = [i for i, ex in enumerate(examples) if self._vectors.get(ex.id, ("",))[0] != keys[i]]
        if missing:
            ids = [examples[i].id for i in missing]
            with self._engine.connect() as conn:
                stored = {
                    r.id: (r.vector_key, r.vector)
                    for r in conn.execute(
                        select(self._table.c.id, self._table.c.vector_key, self._table.c.vector).where(
                            self._table.c.id.in_(ids)
                        )
                    )
                }
            to_embed = []
            for i in missing:
                key, blob = stored.get(examples[i].id, (None, None))
                if key == keys[i] and blob:
                    self._vectors[examples[i].id] = (keys[i], np.frombuffer(blob, dtype=np.float32))
                else:
                    to_embed.append(i)
            if to_embed:
                vectors = await self.embedder.embed([masked[i] for i in to_embed])
                rows = []
                for i, v in zip(to_embed, vectors, strict=True):
                    v = np.asarray(v, dtype=np.float32)
                    self._vectors[examples[i].id] = (keys[i], v)
                    rows.append({"eid": examples[i].id, "vector_key": keys[i], "vector": v.tobytes()})
                stmt = update(self._table).where(self._table.c.id == bindparam("eid"))
                with self._engine.begin() as conn:
                    conn.execute(stmt.values(vector_key=bindparam("vector_key"), vector=bindparam("vector")), rows)
        return np.stack([self._vectors[ex.id][1] for ex in examples])

    def _masked_question(self, source: str, question: str) -> str:
        cache = self._masked.setdefault(source, {})
        masked = cache.get(question)
        if masked is None:
            masked = cache[question] = self.mask(source, question)
        return masked

    # --- internals

    async def _checked(
        self, source: str, question: str, sql: str, verified: bool, connector: Connector | None, timeout_s: float
    ) -> tuple[str, str]:
        question = " ".join(question.split())
        sql = sql.strip().rstrip(";").strip()
        if not question:
            raise InvalidRequestError("the question is empty", param="question")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidRequestError(f"the question is over {MAX_QUESTION_CHARS} characters", param="question")
        if not sql:
            raise InvalidRequestError("the SQL is empty", param="sql")
        if len(sql) > MAX_SQL_CHARS:
            raise InvalidRequestError(f"the SQL is over {MAX_SQL_CHARS} characters", param="sql")
        if not verified:
            return question, sql  # a pair rated wrong is a record, never run or shown: it may well not parse
        check_read_only(sql, connector.dialect if connector is not None else "sqlite")
        if connector is not None:
            try:
                await connector.run(sql, limit=1, timeout_s=timeout_s)
            except InvalidRequestError as exc:
                raise type(exc)(
                    f"the SQL does not run on {source!r}: {exc.message}", param="sql", code=exc.code
                ) from None
        return question, sql

    def _put(self, conn: Connection, source: str, question: str, sql: str, verified: bool, note: str) -> StoredExample:
        t = self._table
        same = conn.execute(
            self._columns().where(t.c.source == source, t.c.question == question, t.c.sql == sql)
        ).first()
        if same is not None:
            values: dict[str, Any] = {"verified": verified}
            if note:
                values["note"] = note
            conn.execute(update(t).where(t.c.id == same.id).values(**values))
            return StoredExample(
                same.id, source, question, sql, verified, note or same.note or "", float(same.created_at)
            )
        now = time.time()
        result = conn.execute(
            insert(t).values(source=source, question=question, sql=sql, verified=verified, note=note, created_at=now)
        )
        new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return StoredExample(int(new_id or 0), source, question, sql, verified, note, now)

    def _columns(self) -> Any:
        t = self._table
        return select(t.c.id, t.c.source, t.c.question, t.c.sql, t.c.verified, t.c.note, t.c.created_at)

    @staticmethod
    def _example(row: Any) -> StoredExample:
        return StoredExample(
            int(row.id), row.source, row.question, row.sql, bool(row.verified), row.note or "", float(row.created_at)
        )

    def close(self) -> None:
        self._engine.dispose()
