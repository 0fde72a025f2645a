"""Agent memory: the conversation of one step (short-term) and past facts and results (long-term).

Long-term memory is a small vector store: texts embedded with any ``Embedder`` (``embed(texts)`` ->
L2-normalised float32 rows), kept in SQLite (a file under DATAPILOT_HOME, or in memory), searched by
cosine similarity with numpy. Agents store what they found at the end of a run and get the most
relevant past findings back in their prompt at the start of the next one. Each memory belongs to a
tenant, and only that tenant's runs recall it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from datapilot.core.tenancy import DEFAULT_TENANT, current_tenant
from datapilot.core.types import Message

DEFAULT_WINDOW_CHARS = 12_000


class Embedder(Protocol):
    """Texts to float32 vectors [n, d], L2-normalised (``datapilot.cache.Embedder`` fits)."""

    async def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class ShortTermMemory:
    """The conversation of one agent step: the system prompt stays, the oldest turns go first when the
    window (in characters, a model-free stand-in for tokens) is full."""

    window_chars: int = DEFAULT_WINDOW_CHARS
    messages: list[Message] = field(default_factory=list)

    def add(self, role: str, content: str) -> Message:
        message = Message(role, content)
        self.messages.append(message)
        return message

    def window(self) -> list[Message]:
        system = [m for m in self.messages[:1] if m.role == "system"]
        rest = self.messages[len(system) :]
        budget = self.window_chars - sum(len(m.content) for m in system)
        kept: list[Message] = []
        for m in reversed(rest):
            if kept and budget - len(m.content) < 0:
                break
            kept.append(m)
            budget -= len(m.content)
        kept.reverse()
        if kept and kept[0].role == "assistant" and len(kept) < len(rest):
            kept = kept[1:]  # a window starts with the user's turn, as chat templates expect
        return system + kept


@dataclass(slots=True)
class MemoryHit:
    id: int
    text: str
    score: float
    metadata: dict[str, Any]
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "score": round(self.score, 4),
            "metadata": self.metadata,
            "created": self.created,
        }


class _MemoryStore:
    """The rows of a long-term memory, in SQLite and in numpy for search; shared by its tenants' views."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
            "metadata TEXT NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL, tenant TEXT)"
        )
        columns = {str(r[1]) for r in self.db.execute("PRAGMA table_info(memories)")}
        if "tenant" not in columns:  # a memory from before tenants: its rows are the default tenant's
            self.db.execute("ALTER TABLE memories ADD COLUMN tenant TEXT")
        self.db.commit()
        self.lock = threading.Lock()
        rows = self.db.execute(
            "SELECT id, text, metadata, vector, created, tenant FROM memories ORDER BY id"
        ).fetchall()
        self.ids = [int(r[0]) for r in rows]
        self.texts = [str(r[1]) for r in rows]
        self.meta: list[dict[str, Any]] = [json.loads(r[2]) for r in rows]
        self.created = [float(r[4]) for r in rows]
        self.tenants = [str(r[5] or DEFAULT_TENANT) for r in rows]
        self.vectors = np.stack([np.frombuffer(r[3], dtype=np.float32) for r in rows]) if rows else None


class LongTermMemory:
    """Past facts and results, retrieved by relevance. ``path=None`` keeps them in memory only.

    Every memory belongs to a tenant, and a tenant recalls only its own: those of ``tenant`` (a view
    made with ``for_tenant``), else of the tenant of the request running (``core.tenancy``). Recall is
    no listing: an admin, too, recalls only its own tenant's memories."""

    def __init__(self, embedder: Embedder, path: str | Path | None = None, *, tenant: str | None = None) -> None:
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self.tenant = tenant
        self._store = _MemoryStore(self.path)

    def for_tenant(self, tenant: str) -> LongTermMemory:
        """A view of this memory that stores and recalls ``tenant``'s memories only, whoever runs it
        (a run started in one tenant's request keeps to that tenant)."""
        view = copy.copy(self)
        view.tenant = tenant
        return view

    def _tenant(self) -> str:
        return self.tenant if self.tenant is not None else current_tenant()

    def __len__(self) -> int:
        """How many memories the store holds, every tenant's."""
        return len(self._store.ids)

    async def add(self, texts: list[str], metadata: list[dict[str, Any]] | None = None) -> list[int]:
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            return []
        metas = metadata or [{} for _ in texts]
        tenant = self._tenant()
        vectors = np.asarray(await self.embedder.embed(texts), dtype=np.float32)
        return await asyncio.to_thread(self._insert, texts, metas, vectors, tenant)

    def _insert(self, texts: list[str], metas: list[dict[str, Any]], vectors: np.ndarray, tenant: str) -> list[int]:
        now = time.time()
        ids: list[int] = []
        store = self._store
        with store.lock:
            for text, meta, vec in zip(texts, metas, vectors, strict=True):
                cur = store.db.execute(
                    "INSERT INTO memories (text, metadata, vector, created, tenant) VALUES (?, ?, ?, ?, ?)",
                    (text, json.dumps(meta, ensure_ascii=False, default=str), vec.tobytes(), now, tenant),
                )
                ids.append(int(cur.lastrowid or 0))
            store.db.commit()
            store.ids += ids
            store.texts += texts
            store.meta += metas
            store.created += [now] * len(ids)
            store.tenants += [tenant] * len(ids)
            store.vectors = vectors if store.vectors is None else np.vstack([store.vectors, vectors])
        return ids

    async def search(
        self, query: str, k: int = 3, *, min_score: float = 0.2, where: dict[str, Any] | None = None
    ) -> list[MemoryHit]:
        """The ``k`` of the tenant's memories most similar to ``query`` (cosine at least ``min_score``),
        best first; ``where`` keeps only memories whose metadata has those values."""
        store = self._store
        if store.vectors is None or not query.strip():
            return []
        tenant = self._tenant()
        q = np.asarray(await self.embedder.embed([query]), dtype=np.float32)[0]
        with store.lock:
            scores = store.vectors @ q
            order = np.argsort(-scores)
            hits: list[MemoryHit] = []
            for i in order:
                if float(scores[i]) < min_score:
                    break
                meta = store.meta[i]
                if store.tenants[i] != tenant:
                    continue
                if where and any(meta.get(key) != value for key, value in where.items()):
                    continue
                hits.append(MemoryHit(store.ids[i], store.texts[i], float(scores[i]), meta, store.created[i]))
                if len(hits) >= k:
                    break
        return hits

    def close(self) -> None:
        with self._store.lock:
            self._store.db.close()
