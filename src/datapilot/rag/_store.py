"""The knowledge rows: spaces, documents and chunks (with their vectors) in one SQLite file.

SQLite in WAL mode under DATAPILOT_HOME. The rows are the truth: the keyword and vector indexes are
rebuilt from them when a knowledge base opens, so a crash can never leave an index holding a chunk
the store has forgotten. Calls are short and serialised by a lock; bulk writes run in worker threads.

Each space belongs to a tenant (``owner``: the tenant of the request that created it, ``default``
outside a request; NULL in a store from before tenants: the default tenant's). ``require_space`` is the
check every use of a space goes through (``space``, and the knowledge service before each operation):
another tenant's space is answered exactly as a missing one (404), one outside the key's scopes is a 403.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.core.errors import ConflictError
from datapilot.core.tenancy import DEFAULT_TENANT, can_see, owner_of_new, require_scope
from datapilot.rag._errors import DocumentNotFoundError, SpaceNotFoundError
from datapilot.rag._types import ChunkDraft, ChunkInfo, DocumentInfo, IngestStatus, SpaceInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    chunking TEXT NOT NULL,
    created REAL NOT NULL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    space TEXT NOT NULL REFERENCES spaces(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    chunks INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (space, source)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    space TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    page INTEGER,
    section TEXT,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (document_id, seq);
CREATE INDEX IF NOT EXISTS chunks_by_space ON chunks (space);
"""

_DOC_COLUMNS = "id, space, source, kind, status, error, chunks, bytes, content_hash, metadata, created, updated"
_CHUNK_COLUMNS = 'id, document_id, space, seq, text, start, "end", page, section'


def _doc(row: tuple[Any, ...]) -> DocumentInfo:
    status = IngestStatus(row[4])
    return DocumentInfo(
        id=row[0], space=row[1], source=row[2], kind=row[3], status=status, error=row[5], chunks=row[6],
        chunks_done=row[6] if status == IngestStatus.DONE else 0, bytes=row[7], content_hash=row[8],
        metadata=json.loads(row[9]), created=row[10], updated=row[11],
    )  # fmt: skip


def _chunk(row: tuple[Any, ...]) -> ChunkInfo:
    return ChunkInfo(*row)


class KnowledgeStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._add_owner_column()

    def _add_owner_column(self) -> None:
        """A store from before tenants gets the ``owner`` column; its spaces keep NULL, the default
        tenant's (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it is)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(spaces)")}
        if "owner" not in columns:
            self._db.execute("ALTER TABLE spaces ADD COLUMN owner TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
            return row

    # spaces ---------------------------------------------------------------------------------------------

    def create_space(
        self, name: str, description: str, chunking: dict[str, Any], owner: str | None = None
    ) -> SpaceInfo:
        """A new space owned by ``owner`` (default: ``owner_of_new()``, the caller's tenant). Names are
        global: one another tenant holds is a 409 that does not say whose it is. Outside the key's
        scopes: 403."""
        holder = self.owner(name)
        if holder is not None and not can_see(holder):
            raise ConflictError(f"the name {name!r} is taken; choose another", param="name")
        require_scope("spaces", name)
        now = time.time()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO spaces (name, description, chunking, created, owner) VALUES (?, ?, ?, ?, ?)",
                    (name, description, json.dumps(chunking), now, owner or owner_of_new()),
                )
        except sqlite3.IntegrityError:
            if not can_see(self.owner(name)):
                raise ConflictError(f"the name {name!r} is taken; choose another", param="name") from None
            raise ConflictError(f"knowledge space {name!r} already exists", param="name") from None
        return SpaceInfo(name, description, chunking, now)

    def owner(self, name: str) -> str | None:
        """The tenant owning space ``name`` (the default tenant for one from before tenants); None: no such space."""
        row = self._one("SELECT owner FROM spaces WHERE name = ?", (name,))
        return None if row is None else (row[0] or DEFAULT_TENANT)

    def owners(self) -> dict[str, str]:
        """Every space's owner, by name."""
        return {r[0]: r[1] or DEFAULT_TENANT for r in self._all("SELECT name, owner FROM spaces")}

    def require_space(self, name: str) -> None:
        """The check every use of a space goes through: a space the caller may not see is answered
        exactly as a missing one (404, naming only the caller's spaces); outside the key's scopes, 403."""
        owner = self.owner(name)
        if owner is None or not can_see(owner):
            known = ", ".join(n for n, o in sorted(self.owners().items()) if can_see(o)) or "none"
            raise SpaceNotFoundError(f"knowledge space {name!r} does not exist (spaces: {known})")
        require_scope("spaces", name)

    def spaces(self) -> list[SpaceInfo]:
        rows = self._all(
            "SELECT s.name, s.description, s.chunking, s.created,"
            " (SELECT COUNT(*) FROM documents d WHERE d.space = s.name),"
            " (SELECT COUNT(*) FROM chunks c WHERE c.space = s.name)"
            " FROM spaces s ORDER BY s.name"
        )
        return [SpaceInfo(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def space(self, name: str) -> SpaceInfo:
        self.require_space(name)
        row = self._one(
            "SELECT name, description, chunking, created,"
            " (SELECT COUNT(*) FROM documents WHERE space = ?), (SELECT COUNT(*) FROM chunks WHERE space = ?)"
            " FROM spaces WHERE name = ?",
            (name, name, name),
        )
        if row is None:  # deleted since the check
            raise SpaceNotFoundError(f"knowledge space {name!r} does not exist")
        return SpaceInfo(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def delete_space(self, name: str) -> None:
        self.space(name)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM chunks WHERE space = ?", (name,))
            self._db.execute("DELETE FROM documents WHERE space = ?", (name,))
            self._db.execute("DELETE FROM spaces WHERE name = ?", (name,))
            self._db.execute("COMMIT")

    # documents ------------------------------------------------------------------------------------------

    def document(self, space: str, doc_id: str) -> DocumentInfo:
        row = self._one(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = ? AND space = ?", (doc_id, space))
        if row is None:
            raise DocumentNotFoundError(f"document {doc_id!r} is not in knowledge space {space!r}")
        return _doc(row)

    def find_document(self, space: str, source: str) -> DocumentInfo | None:
        row = self._one(f"SELECT {_DOC_COLUMNS} FROM documents WHERE space = ? AND source = ?", (space, source))
        return None if row is None else _doc(row)

    def documents(self, space: str) -> list[DocumentInfo]:
        rows = self._all(f"SELECT {_DOC_COLUMNS} FROM documents WHERE space = ? ORDER BY source", (space,))
        return [_doc(r) for r in rows]

    def new_document(
        self, space: str, source: str, kind: str, size: int, content_hash: str, metadata: dict[str, Any]
    ) -> DocumentInfo:
        now = time.time()
        doc_id = "doc_" + uuid.uuid4().hex[:16]
        with self._lock:
            self._db.execute(
                f"INSERT INTO documents ({_DOC_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?, ?)",
                (doc_id, space, source, kind, IngestStatus.QUEUED.value, size, content_hash,
                 json.dumps(metadata), now, now),
            )  # fmt: skip
        return self.document(space, doc_id)

    def set_status(self, doc_id: str, status: IngestStatus, error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE documents SET status = ?, error = ?, updated = ? WHERE id = ?",
                (status.value, error, time.time(), doc_id),
            )

    def requeue(self, doc_id: str, kind: str, size: int, content_hash: str, metadata: dict[str, Any]) -> None:
        """A changed document: queued again; its old chunks stay searchable until the new ones replace them."""
        with self._lock:
            self._db.execute(
                "UPDATE documents SET status = ?, error = NULL, kind = ?, bytes = ?, content_hash = ?,"
                " metadata = ?, updated = ? WHERE id = ?",
                (IngestStatus.QUEUED.value, kind, size, content_hash, json.dumps(metadata), time.time(), doc_id),
            )

    def fail_unfinished(self) -> int:
        """Documents a stopped process left half-ingested are failed, so a status never lies."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE documents SET status = ?, error = ?, content_hash = '' WHERE status NOT IN (?, ?)",
                (IngestStatus.FAILED.value, "ingestion was interrupted (the process stopped); add it again",
                 IngestStatus.DONE.value, IngestStatus.FAILED.value),
            )  # fmt: skip
            return int(cur.rowcount)

    def delete_document(self, space: str, doc_id: str) -> list[int]:
        """Remove the document and its chunks; answers the removed chunks' ids."""
        self.document(space, doc_id)
        with self._lock:
            self._db.execute("BEGIN")
            ids = [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))]
            self._db.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
            self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            self._db.execute("COMMIT")
        return ids

    # chunks ---------------------------------------------------------------------------------------------

    def replace_chunks(
        self, space: str, doc_id: str, drafts: list[ChunkDraft], vectors: np.ndarray, content_hash: str
    ) -> tuple[list[int], list[int]]:
        """Swap a document's chunks for new ones in one transaction: (old ids, new ids). The document is
        marked done with ``content_hash`` in the same transaction."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if self._db.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone() is None:
                    self._db.execute("ROLLBACK")
                    raise DocumentNotFoundError(f"document {doc_id!r} was deleted while it was being ingested")
                old = [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))]
                self._db.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
                new: list[int] = []
                for seq, (draft, vector) in enumerate(zip(drafts, vectors, strict=True)):
                    cur = self._db.execute(
                        'INSERT INTO chunks (document_id, space, seq, text, start, "end", page, section, vector)'
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (doc_id, space, seq, draft.text, draft.start, draft.end, draft.page, draft.section,
                         vector.tobytes()),
                    )  # fmt: skip
                    new.append(int(cur.lastrowid or 0))
                self._db.execute(
                    "UPDATE documents SET status = ?, error = NULL, chunks = ?, content_hash = ?, updated = ?"
                    " WHERE id = ?",
                    (IngestStatus.DONE.value, len(new), content_hash, time.time(), doc_id),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        return old, new

    def chunks(self, space: str, doc_id: str, offset: int = 0, limit: int = 100) -> list[ChunkInfo]:
        self.document(space, doc_id)
        rows = self._all(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE document_id = ? ORDER BY seq LIMIT ? OFFSET ?",
            (doc_id, limit, offset),
        )
        return [_chunk(r) for r in rows]

    def chunks_by_id(self, ids: list[int]) -> dict[int, ChunkInfo]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._all(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE id IN ({marks})", tuple(ids))
        for space in {r[2] for r in rows}:  # retrieval's passages: never another tenant's text
            self.require_space(space)
        return {r[0]: _chunk(r) for r in rows}

    def space_rows(self, space: str) -> Iterator[tuple[int, str, str, int | None, str | None, bytes | None]]:
        """Every chunk of a space for rebuilding indexes: (id, document id, text, page, section, vector)."""
        yield from self._all(
            "SELECT id, document_id, text, page, section, vector FROM chunks WHERE space = ? ORDER BY id", (space,)
        )
