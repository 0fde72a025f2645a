"""Agent memory: the conversation of one step (short-term) and past facts and results (long-term).

Long-term memory is a small vector store: texts embedded with any ``Embedder`` (``embed(texts)`` ->
L2-normalised float32 rows), kept in SQLite (a file under DATAPILOT_HOME, or in memory), searched by
cosine similarity with numpy. Agents store what they found at the end of a run and get the most
relevant past findings back in their prompt at the start of the next one.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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


class LongTermMemory:
    """Past facts and results, retrieved by relevance. ``path=None`` keeps them in memory only."""

    def __init__(self, embedder: Embedder, path: str | Path | None = None) -> None:
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
            "metadata TEXT NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL)"
        )
        self._db.commit()
        self._lock = threading.Lock()
        rows = self._db.execute("SELECT id, text, metadata, vector, created FROM memories ORDER BY id").fetchall()
        self._ids = [int(r[0]) for r in rows]
        self._texts = [str(r[1]) for r in rows]
        self._meta: list[dict[str, Any]] = [json.loads(r[2]) for r in rows]
        self._created = [float(r[4]) for r in rows]
        self._vectors = np.stack([np.frombuffer(r[3], dtype=np.float32) for r in rows]) if rows else None

    def __len__(self) -> int:
        return len(self._ids)

    async def add(self, texts: list[str], metadata: list[dict[str, Any]] | None = None) -> list[int]:
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            return []
        metas = metadata or [{} for _ in texts]
        vectors = np.asarray(await self.embedder.embed(texts), dtype=np.float32)
        return await asyncio.to_thread(self._insert, texts, metas, vectors)

    def _insert(self, texts: list[str], metas: list[dict[str, Any]], vectors: np.ndarray) -> list[int]:
        now = time.time()
        ids: list[int] = []
        with self._lock:
            for text, meta, vec in zip(texts, metas, vectors, strict=True):
                cur = self._db.execute(
                    "INSERT INTO memories (text, metadata, vector, created) VALUES (?, ?, ?, ?)",
                    (text, json.dumps(meta, ensure_ascii=False, default=str), vec.tobytes(), now),
                )
                ids.append(int(cur.lastrowid or 0))
            self._db.commit()
            self._ids += ids
            self._texts += texts
            self._meta += metas
            self._created += [now] * len(ids)
            self._vectors = vectors if self._vectors is None else np.vstack([self._vectors, vectors])
        return ids

    async def search(
        self, query: str, k: int = 3, *, min_score: float = 0.2, where: dict[str, Any] | None = None
    ) -> list[MemoryHit]:
        """The ``k`` memories most similar to ``query`` (cosine at least ``min_score``), best first;
        ``where`` keeps only memories whose metadata has those values."""
        if self._vectors is None or not query.strip():
            return []
        q = np.asarray(await self.embedder.embed([query]), dtype=np.float32)[0]
        with self._lock:
            scores = self._vectors @ q
            order = np.argsort(-scores)
            hits: list[MemoryHit] = []
            for i in order:
                if float(scores[i]) < min_score:
                    break
                meta = self._meta[i]
                if where and any(meta.get(key) != value for key, value in where.items()):
                    continue
                hits.append(MemoryHit(self._ids[i], self._texts[i], float(scores[i]), meta, self._created[i]))
                if len(hits) >= k:
                    break
        return hits

    def close(self) -> None:
        with self._lock:
            self._db.close()
