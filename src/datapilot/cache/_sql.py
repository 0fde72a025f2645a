"""The scalar store: entries, per-scope settings, the query log and feedback, in any SQLAlchemy database.

SQLite (WAL) is the embedded default; PostgreSQL and MySQL/MariaDB are the production ones. The
entries table also keeps each entry's vector, so it is the source of truth: a vector index can always
be rebuilt from it, which is how the store recovers from a crash between the SQL commit and the index.
Every multi-row write is one transaction: a batch with a bad row writes nothing. Feedback rows belong
to their entry: whatever deletes an entry (remove, truncate, eviction) deletes its feedback in the same
transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
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
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from datapilot.cache._types import Entry, FeedbackRecord, LogRecord, NewEntry

metadata = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

entries = Table(
    "dp_cache_entries",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("scope", String(512), nullable=False),
    Column("question", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("context_hash", String(64), nullable=False),
    Column("params_key", String(1024), nullable=False),
    Column("answer", Text, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("context_embedding", LargeBinary, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("hit_count", Integer, nullable=False, default=0),
    Column("last_hit_at", Float, nullable=True),
    Index("ix_dp_cache_entries_scope_id", "scope", "id"),
    Index("ix_dp_cache_entries_scope_expires", "scope", "expires_at"),
    # Ids are never reused (an index may still hold a deleted id as a tombstone).
    sqlite_autoincrement=True,
)

scopes = Table(
    "dp_cache_scopes",
    metadata,
    Column("scope", String(512), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

query_log = Table(
    "dp_cache_query_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("scope", String(512), nullable=False),
    Column("query", Text, nullable=False),
    Column("hit", Boolean, nullable=False),
    Column("hit_query", Text, nullable=True),
    Column("similarity", Float, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("lookup_ms", Float, nullable=False),
    Column("entry_id", BigInteger, nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_dp_cache_query_log_scope_id", "scope", "id"),
)

# Marks on hits (see ``_feedback``). The probe's vector is kept like an entry's, so the in-memory state
# that lookups consult is rebuilt from this table alone. "is_right", not "right": RIGHT is reserved SQL.
feedback = Table(
    "dp_cache_feedback",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("scope", String(512), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("probe", Text, nullable=False),
    Column("context_hash", String(64), nullable=False),
    Column("similarity", Float, nullable=False),
    Column("is_right", Boolean, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_dp_cache_feedback_scope_id", "scope", "id"),
    Index("ix_dp_cache_feedback_entry", "entry_id"),
)

_ENTRY_COLUMNS = [
    entries.c.id,
    entries.c.scope,
    entries.c.question,
    entries.c.context,
    entries.c.context_hash,
    entries.c.params_key,
    entries.c.answer,
    entries.c.created_at,
    entries.c.expires_at,
    entries.c.hit_count,
    entries.c.last_hit_at,
    entries.c.context_embedding,
]
# The same columns for the plain-sqlite3 lookup path (see SQLStore.fetch).
_FETCH_SQL = (
    f"SELECT {', '.join(c.name for c in _ENTRY_COLUMNS)} FROM {entries.name}"
    " WHERE scope = ? AND id IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)"
)


def _blob(v: Any) -> bytes | None:
    return None if v is None else np.asarray(v, dtype=np.float32).tobytes()


def _vec(b: bytes | None) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype=np.float32)


def _entry(r: Any, with_context_vector: bool) -> Entry:
    return Entry(
        id=int(r[0]),
        scope=r[1],
        question=r[2],
        context=r[3],
        context_hash=r[4],
        params_key=r[5],
        answer=r[6],
        created_at=r[7],
        expires_at=r[8],
        hit_count=int(r[9] or 0),
        last_hit_at=r[10],
        context_vector=_vec(r[11]) if with_context_vector else None,
    )


def default_sqlite_url(home: Path) -> str:
    folder = home / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'cache.db'}"


class SQLStore:
    """Rows of the cache in one SQLAlchemy engine. Thread-safe; writes from this process are serialised."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=8, max_overflow=16)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._write_lock = threading.Lock()
        metadata.create_all(self.engine)
        self._returning = bool(self.engine.dialect.insert_executemany_returning)
        # Lookups on the embedded store read through plain sqlite3 connections, one per thread: a
        # fetch of a few rows then costs tens of microseconds instead of SQLAlchemy's few hundred.
        database = self.engine.url.database if self.is_sqlite else None
        self._sqlite_file = database if database and database != ":memory:" else None
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []

    def close(self) -> None:
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        self.engine.dispose()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            assert self._sqlite_file is not None
            conn = sqlite3.connect(self._sqlite_file, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            self._readers.conn = conn
            with self._write_lock:
                self._reader_conns.append(conn)
        return conn

    # entries ---------------------------------------------------------------------------------------

    def insert(self, rows: list[NewEntry]) -> list[int]:
        values = [
            {
                "scope": r.scope,
                "question": r.question,
                "context": r.context,
                "context_hash": r.context_hash,
                "params_key": r.params_key,
                "answer": r.answer,
                "embedding": _blob(r.vector),
                "context_embedding": _blob(r.context_vector),
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "hit_count": 0,
                "last_hit_at": None,
            }
            for r in rows
        ]
        if not values:
            return []
        with self._write_lock, self.engine.begin() as conn:
            if self._returning:
                result = conn.execute(insert(entries).returning(entries.c.id, sort_by_parameter_order=True), values)
                return [int(row[0]) for row in result]
            ids = []
            for v in values:
                key = conn.execute(insert(entries), v).inserted_primary_key
                assert key is not None
                ids.append(int(key[0]))
            return ids

    def fetch(self, scope: str, ids: list[int], now: float) -> dict[int, Entry]:
        if not ids:
            return {}
        if self._sqlite_file is not None:
            sql = _FETCH_SQL.format(marks=",".join("?" * len(ids)))
            found = self._reader().execute(sql, (scope, *ids, now)).fetchall()
            return {int(r[0]): _entry(r, with_context_vector=True) for r in found}
        stmt = select(*_ENTRY_COLUMNS).where(
            entries.c.scope == scope,
            entries.c.id.in_(ids),
            (entries.c.expires_at.is_(None)) | (entries.c.expires_at > now),
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return {int(r[0]): _entry(r, with_context_vector=True) for r in rows}

    def entry_with_vector(self, scope: str, entry_id: int, now: float) -> tuple[Entry, np.ndarray] | None:
        """One live entry of ``scope`` and its question's vector; None if there is none."""
        stmt = select(*_ENTRY_COLUMNS, entries.c.embedding).where(
            entries.c.scope == scope,
            entries.c.id == entry_id,
            (entries.c.expires_at.is_(None)) | (entries.c.expires_at > now),
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return _entry(row, with_context_vector=True), np.frombuffer(row[-1], dtype=np.float32)

    def list_entries(self, scope: str, limit: int = 100, offset: int = 0) -> list[Entry]:
        stmt = (
            select(*_ENTRY_COLUMNS).where(entries.c.scope == scope).order_by(entries.c.id).limit(limit).offset(offset)
        )
        with self.engine.connect() as conn:
            return [_entry(r, with_context_vector=False) for r in conn.execute(stmt)]

    def delete(self, scope: str, ids: list[int]) -> list[int]:
        if not ids:
            return []
        with self._write_lock, self.engine.begin() as conn:
            found = [
                int(r[0])
                for r in conn.execute(select(entries.c.id).where(entries.c.scope == scope, entries.c.id.in_(ids)))
            ]
            if found:
                conn.execute(delete(entries).where(entries.c.scope == scope, entries.c.id.in_(found)))
                _delete_feedback(conn, found)
        return found

    def truncate(self, scope: str) -> int:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(delete(feedback).where(feedback.c.scope == scope))
            return int(conn.execute(delete(entries).where(entries.c.scope == scope)).rowcount or 0)

    def count(self, scope: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(entries.c.scope == scope)).scalar_one())

    def signature(self, scope: str) -> tuple[int, int, int]:
        """(count, max id, sum of ids): equal signatures mean an index snapshot holds exactly these rows."""
        stmt = select(func.count(), func.coalesce(func.max(entries.c.id), 0), func.coalesce(func.sum(entries.c.id), 0))
        with self.engine.connect() as conn:
            n, top, total = conn.execute(stmt.where(entries.c.scope == scope)).one()
        return int(n), int(top), int(total)

    def scope_keys(self) -> list[str]:
        with self.engine.connect() as conn:
            found = {r[0] for r in conn.execute(select(entries.c.scope).distinct())}
            found |= {r[0] for r in conn.execute(select(scopes.c.scope))}
        return sorted(found)

    def _batches(self, scope: str, column: Any, batch: int, after: int = -1) -> Iterator[list[Any]]:
        """Every entry's (id, ``column``) with an id above ``after``, in batches by id."""
        last = after
        while True:
            stmt = (
                select(entries.c.id, column)
                .where(entries.c.scope == scope, entries.c.id > last)
                .order_by(entries.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = list(conn.execute(stmt).all())
            if not rows:
                return
            last = int(rows[-1][0])
            yield rows

    def iter_vectors(self, scope: str, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows in self._batches(scope, entries.c.embedding, batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    def iter_questions(self, scope: str, batch: int = 20_000, after: int = -1) -> Iterator[list[tuple[int, str]]]:
        """Every entry's (id, question) with an id above ``after``, in batches (the lexical index is built
        from them)."""
        for rows in self._batches(scope, entries.c.question, batch, after):
            yield [(int(r[0]), str(r[1])) for r in rows]

    def vectors(self, scope: str, ids: list[int]) -> dict[int, np.ndarray]:
        """These entries' question vectors (the ones that exist)."""
        if not ids:
            return {}
        stmt = select(entries.c.id, entries.c.embedding).where(entries.c.scope == scope, entries.c.id.in_(ids))
        with self.engine.connect() as conn:
            return {int(r[0]): np.frombuffer(r[1], dtype=np.float32) for r in conn.execute(stmt).all()}

    def evict(self, scope: str, max_entries: int, policy: str, now: float) -> list[int]:
        """Delete expired rows, then the least recently (LRU) or least often (LFU) used over the limit."""
        with self._write_lock, self.engine.begin() as conn:
            expired = [
                int(r[0])
                for r in conn.execute(
                    select(entries.c.id).where(
                        entries.c.scope == scope, entries.c.expires_at.is_not(None), entries.c.expires_at <= now
                    )
                )
            ]
            if expired:
                conn.execute(delete(entries).where(entries.c.scope == scope, entries.c.id.in_(expired)))
                _delete_feedback(conn, expired)
            n = int(conn.execute(select(func.count()).where(entries.c.scope == scope)).scalar_one())
            excess = n - max_entries
            if excess <= 0:
                return expired
            recency = func.coalesce(entries.c.last_hit_at, entries.c.created_at)
            order = [recency, entries.c.id] if policy == "lru" else [entries.c.hit_count, recency, entries.c.id]
            victims = [
                int(r[0])
                for r in conn.execute(
                    select(entries.c.id).where(entries.c.scope == scope).order_by(*order).limit(excess)
                )
            ]
            for i in range(0, len(victims), 500):
                conn.execute(delete(entries).where(entries.c.id.in_(victims[i : i + 500])))
            _delete_feedback(conn, victims)
        return expired + victims

    def record_hits(self, hits: list[tuple[int, float]]) -> None:
        if not hits:
            return
        with self._write_lock, self.engine.begin() as conn:
            for entry_id, at in hits:
                conn.execute(
                    update(entries)
                    .where(entries.c.id == entry_id)
                    .values(hit_count=entries.c.hit_count + 1, last_hit_at=at)
                )

    # per-scope settings ------------------------------------------------------------------------------

    def scope_settings(self, scope: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(scopes.c.settings).where(scopes.c.scope == scope)).first()
        return None if row is None else dict(json.loads(row[0]))

    def all_scope_settings(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r[0]: json.loads(r[1]) for r in conn.execute(select(scopes.c.scope, scopes.c.settings))}

    def register(self, scope: str, settings: dict[str, Any] | None = None) -> bool:
        """Create the scope's settings row; True if it was new. ``settings`` replace stored ones when given."""
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(select(scopes.c.settings).where(scopes.c.scope == scope)).first()
            if row is None:
                conn.execute(
                    insert(scopes).values(scope=scope, settings=json.dumps(settings or {}), created_at=time.time())
                )
                return True
            if settings is not None:
                conn.execute(update(scopes).where(scopes.c.scope == scope).values(settings=json.dumps(settings)))
            return False

    # query log -------------------------------------------------------------------------------------

    def write_log(self, records: list[LogRecord]) -> None:
        if not records:
            return
        values = [
            {
                "scope": r.scope,
                "query": r.query,
                "hit": r.hit,
                "hit_query": r.hit_query,
                "similarity": r.similarity,
                "latency_ms": r.latency_ms,
                "lookup_ms": r.lookup_ms,
                "entry_id": r.entry_id,
                "created_at": r.created_at,
            }
            for r in records
        ]
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(insert(query_log), values)

    def read_log(
        self, scope: str | None, limit: int = 100, *, within: Collection[str] | None = None
    ) -> list[LogRecord]:
        """The newest rows of one scope (``scope``), of some (``within``: scope keys), or of all."""
        c = query_log.c
        stmt = select(
            c.scope, c.query, c.hit, c.hit_query, c.similarity, c.latency_ms, c.created_at, c.entry_id, c.lookup_ms
        )
        if scope is not None:
            stmt = stmt.where(c.scope == scope)
        if within is not None:
            if not within:
                return []
            stmt = stmt.where(c.scope.in_(sorted(within)))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(c.id.desc()).limit(limit)).all()
        return [LogRecord(*r) for r in rows]

    def log_scope_keys(self) -> list[str]:
        """The scopes the query log holds rows of (a scope queried but never written has no entries)."""
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(select(query_log.c.scope).distinct()))

    def log_totals(self, scope: str) -> tuple[int, int]:
        c = query_log.c
        stmt = select(func.count(), func.coalesce(func.sum(case((c.hit, 1), else_=0)), 0)).where(c.scope == scope)
        with self.engine.connect() as conn:
            n, hits = conn.execute(stmt).one()
        return int(n), int(hits)

    def truncate_log(self, scope: str) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(delete(query_log).where(query_log.c.scope == scope))

    # feedback ----------------------------------------------------------------------------------------

    def insert_feedback(self, record: FeedbackRecord) -> int | None:
        """Store a mark; None (and nothing stored) when its entry is gone from the scope meanwhile."""
        values = {
            "scope": record.scope,
            "entry_id": record.entry_id,
            "probe": record.probe,
            "context_hash": record.context_hash,
            "similarity": record.similarity,
            "is_right": record.right,
            "embedding": _blob(record.vector),
            "created_at": record.created_at,
        }
        with self._write_lock, self.engine.begin() as conn:
            alive = conn.execute(
                select(entries.c.id).where(entries.c.scope == record.scope, entries.c.id == record.entry_id)
            ).first()
            if alive is None:
                return None
            key = conn.execute(insert(feedback), values).inserted_primary_key
            assert key is not None
            return int(key[0])

    def list_feedback(
        self, scope: str, limit: int | None = 100, offset: int = 0, *, newest_first: bool = True, vectors: bool = False
    ) -> list[FeedbackRecord]:
        """A scope's marks with the question each hit was served under (``limit=None``: all of them)."""
        f = feedback.c
        columns = [f.id, f.scope, f.entry_id, f.probe, f.context_hash, f.similarity, f.is_right, f.created_at]
        stmt = (
            select(*columns, entries.c.question, *([f.embedding] if vectors else []))
            .select_from(feedback.outerjoin(entries, entries.c.id == f.entry_id))
            .where(f.scope == scope)
            .order_by(f.id.desc() if newest_first else f.id)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            FeedbackRecord(
                id=int(r[0]),
                scope=r[1],
                entry_id=int(r[2]),
                probe=r[3],
                context_hash=r[4],
                similarity=float(r[5]),
                right=bool(r[6]),
                created_at=float(r[7]),
                question=r[8] or "",
                vector=_vec(r[9]) if vectors else None,
            )
            for r in rows
        ]


def _delete_feedback(conn: Any, entry_ids: list[int]) -> None:
    for i in range(0, len(entry_ids), 500):
        conn.execute(delete(feedback).where(feedback.c.entry_id.in_(entry_ids[i : i + 500])))


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer; NORMAL sync is crash-safe in WAL mode (a power cut may lose
    # the last commits, never corrupt the file).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
