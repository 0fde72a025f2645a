"""The retrieval seams: ``Embedder`` (texts to vectors) and ``VectorIndex`` (vectors by id, searched).

Implementations live in ``datapilot.retrieval`` (MiniLM, remote and hash embedders; faiss, Milvus and
in-memory indexes); the cache, knowledge retrieval, text-to-SQL and AWEL flows type against these.

``VectorIndex`` is scoped: one collection per scope (a cache scope, a knowledge space, a flow's named
store), so a search never returns another scope's vector. It holds ids and vectors only; what an id
means (a cache row, a chunk, a flow document) lives with its owner, which rebuilds the index from its
rows when ``restore`` finds no matching snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

Signature = tuple[int, int, int]
"""What a persisted scope must match to be trusted: (rows, largest id, sum of ids), from the owner's rows."""


@runtime_checkable
class Embedder(Protocol):
    """Texts to float32 vectors [n, d], L2-normalised.

    Optional, looked up with ``getattr`` by owners: ``async load()`` (warm up before the first
    request) and ``async aclose()`` (release threads or HTTP clients it made).
    """

    name: str

    async def embed(self, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class VectorIndex(Protocol):
    """Collections of L2-normalised float32 vectors with int64 ids, one per scope, searched by inner
    product (cosine). Writes and searches may come from several threads."""

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def search(self, scope: str, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` best ids and their scores, best first; empty for an unknown scope."""
        ...

    def delete(self, scope: str, ids: list[int]) -> None: ...

    def drop(self, scope: str) -> None: ...

    def count(self, scope: str) -> int: ...

    # persistence: an index that keeps nothing answers False and does nothing

    def restore(self, scope: str, signature: Signature) -> bool:
        """Load a persisted copy that matches ``signature``; False if there is none that does."""
        ...

    def close(self, signatures: dict[str, Signature]) -> None:
        """Persist the scopes whose contents match their signature, then release the index."""
        ...


@dataclass(slots=True)
class Hit:
    """One search result with what its id stands for (a flow document, a knowledge chunk)."""

    id: str
    score: float
    payload: Any
