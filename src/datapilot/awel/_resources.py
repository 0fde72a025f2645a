"""The environment a flow runs in, and the small seams it owns until the real modules arrive.

``FlowResources`` holds the model clients and named stores that ready operators use; checking a
DAG against it fails at load time, naming any model or store that is not configured.

Named vector stores (``VectorStore``: documents with payloads, searched by vector) keep their vectors
in the ``VectorIndex`` seam of ``datapilot.core.retrieval`` (``IndexedVectorStore``); whoever builds
the resources gives the index (``datapilot.retrieval.InMemoryVectorIndex`` embedded, or faiss). Caches
(``caches``) are the semantic cache's clients, used by the ``cache_lookup``/``cache_store`` operators
the cache module registers; ``sources`` are the data sources the ``sql`` operator queries. The seam
owned here: ``ChatHistory``.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from datapilot.awel._errors import FlowLoadError
from datapilot.core.client import EmbeddingClient, LLMClient
from datapilot.core.errors import ConfigError
from datapilot.core.retrieval import Hit, VectorIndex
from datapilot.core.types import Message

if TYPE_CHECKING:
    from datapilot.awel._dag import DAG

DEFAULT_VECTOR_STORE = "embedded"
DEFAULT_CACHE = "default"
DEFAULT_HISTORY = "default"


@runtime_checkable
class VectorStore(Protocol):
    """A flow's named vector store: documents (any payload) with their vectors, searched by vector.
    ``IndexedVectorStore`` keeps them in a ``VectorIndex``; a knowledge base is one too (read-only)."""

    def add(self, vectors: np.ndarray, payloads: list[Any], ids: list[str] | None = None) -> list[str]: ...

    def search(self, vector: np.ndarray, k: int, filter: Callable[[Any], bool] | None = None) -> list[Hit]: ...

    def delete(self, ids: list[str]) -> int: ...

    def __len__(self) -> int: ...


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32, copy=False)


class IndexedVectorStore:
    """A ``VectorStore`` over one scope of a ``VectorIndex``: the vectors go to the index (normalised,
    so scores are cosines), the payloads stay here in memory under the index's int ids.

    ``index=None`` is a store that is named but has no index yet: using it says how to give one.
    """

    def __init__(self, index: VectorIndex | None, scope: str = DEFAULT_VECTOR_STORE) -> None:
        self.index, self.scope = index, scope
        self._payloads: dict[int, tuple[str, Any]] = {}  # index id -> (store id, payload)
        self._keys: dict[str, int] = {}  # store id -> index id
        self._next = itertools.count(1)

    def __len__(self) -> int:
        return len(self._payloads)

    def _index(self) -> VectorIndex:
        if self.index is None:
            raise ConfigError(
                f"vector store {self.scope!r} has no vector index: build the flow resources with "
                "FlowResources.embedded(..., index_factory=datapilot.retrieval.InMemoryVectorIndex)"
            )
        return self.index

    def add(self, vectors: np.ndarray, payloads: list[Any], ids: list[str] | None = None) -> list[str]:
        index = self._index()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(payloads) or (ids is not None and len(ids) != len(payloads)):
            raise ValueError("add() takes an [n, d] matrix, n payloads and (optionally) n ids")
        names = list(ids) if ids is not None else [uuid.uuid4().hex for _ in payloads]
        self.delete([n for n in names if n in self._keys])  # an id added again replaces its document
        keys = [next(self._next) for _ in names]
        index.add(self.scope, np.asarray(keys, dtype=np.int64), _unit(vectors))
        for key, name, payload in zip(keys, names, payloads, strict=True):
            self._keys[name] = key
            self._payloads[key] = (name, payload)
        return names

    def search(self, vector: np.ndarray, k: int, filter: Callable[[Any], bool] | None = None) -> list[Hit]:
        index = self._index()
        if not self._payloads or k <= 0:
            return []
        query = _unit(np.asarray(vector, dtype=np.float32).reshape(-1))
        fetch = k if filter is None else 4 * k
        while True:  # with a filter, fetch more until k pass or the store is exhausted
            keys, scores = index.search(self.scope, query, min(fetch, len(self._payloads)))
            hits: list[Hit] = []
            for key, score in zip(keys, scores, strict=True):
                found = self._payloads.get(key)
                if found is not None and (filter is None or filter(found[1])):
                    hits.append(Hit(found[0], score, found[1]))
            if len(hits) >= k or fetch >= len(self._payloads):
                return hits[:k]
            fetch *= 4

    def delete(self, ids: list[str]) -> int:
        keys = [self._keys.pop(i) for i in dict.fromkeys(ids) if i in self._keys]
        for key in keys:
            del self._payloads[key]
        if keys:
            self._index().delete(self.scope, keys)
        return len(keys)


@runtime_checkable
class ChatHistory(Protocol):
    async def append(self, conv_id: str, messages: list[Message]) -> None: ...

    async def load(self, conv_id: str, limit: int) -> list[Message]: ...


class InMemoryChatHistory:
    def __init__(self) -> None:
        self._turns: dict[str, list[Message]] = defaultdict(list)

    async def append(self, conv_id: str, messages: list[Message]) -> None:
        self._turns[conv_id].extend(messages)

    async def load(self, conv_id: str, limit: int) -> list[Message]:
        return list(self._turns.get(conv_id, [])[-limit:]) if limit > 0 else []


_STORE_KINDS = {
    "vector_store": ("vector_stores", "vector store"),
    "cache": ("caches", "cache"),
    "history": ("histories", "chat history store"),
}


@dataclass
class FlowResources:
    """What ready operators reach at run time: model clients and named stores."""

    llm: LLMClient | None = None
    embeddings: EmbeddingClient | None = None
    vector_stores: dict[str, VectorStore] = field(default_factory=dict)
    caches: dict[str, Any] = field(default_factory=dict)  # name -> a semantic cache client (lookup, store)
    histories: dict[str, ChatHistory] = field(default_factory=dict)
    sources: Any = None  # the data sources (``datapilot.datasource.DataSources``) the ``sql`` operator queries
    default_source: str = "sample"

    @classmethod
    def embedded(
        cls,
        client: Any = None,
        vector_stores: list[str] | tuple[str, ...] = (DEFAULT_VECTOR_STORE,),
        *,
        index_factory: Callable[[], VectorIndex] | None = None,
    ) -> FlowResources:
        """The embedded set-up: one client for chat and embeddings, in-memory stores by name, each
        store's vectors in an index made by ``index_factory`` (e.g. ``datapilot.retrieval``'s
        ``InMemoryVectorIndex``; awel does not import the modules that implement it)."""
        return cls(
            llm=client,
            embeddings=client,
            vector_stores={n: IndexedVectorStore(index_factory() if index_factory else None, n) for n in vector_stores},
            histories={DEFAULT_HISTORY: InMemoryChatHistory()},
        )

    def chat_client(self, node: str) -> LLMClient:
        if self.llm is None:
            raise ConfigError(f"node {node!r} calls a model but the flow has no LLM client (bind FlowResources)")
        return self.llm

    def embedding_client(self, node: str) -> EmbeddingClient:
        client = self.embeddings or self.llm
        if client is None or not hasattr(client, "embed"):
            raise ConfigError(f"node {node!r} embeds text but the flow has no embedding client (bind FlowResources)")
        return client  # type: ignore[return-value]

    def store(self, kind: str, name: str, node: str) -> Any:
        attr, label = _STORE_KINDS[kind]
        stores: dict[str, Any] = getattr(self, attr)
        try:
            return stores[name]
        except KeyError:
            known = ", ".join(sorted(stores)) or "none"
            raise ConfigError(
                f"node {node!r} names {label} {name!r}, which is not configured (configured: {known})"
            ) from None

    async def model_names(self) -> dict[str, frozenset[str]]:
        client = self.llm if self.llm is not None else self.embeddings
        if client is None or not hasattr(client, "models"):
            return {}
        return {m.name: m.capabilities for m in await client.models()}

    async def check(self, dag: DAG) -> None:
        """Raise ``FlowLoadError`` naming every model or store the DAG needs that is not configured."""
        reqs = dag.requirements()
        problems: list[str] = []
        if any(r.kind == "model" for r in reqs):
            if self.llm is None and self.embeddings is None:
                problems.append("it calls models but no model client is configured")
            else:
                models = await self.model_names()
                known = ", ".join(sorted(models)) or "none"
                for r in (r for r in reqs if r.kind == "model"):
                    caps = models.get(r.name)
                    if caps is None:
                        problems.append(
                            f"node {r.node!r} names model {r.name!r}, which is not configured (configured: {known})"
                        )
                    elif r.capability and caps and r.capability not in caps:
                        problems.append(
                            f"node {r.node!r} needs {r.capability} from model {r.name!r}, which supports "
                            f"{', '.join(sorted(caps))}"
                        )
        for r in reqs:
            if r.kind == "datasource":
                store = getattr(self.sources, "store", None)
                if store is None:
                    problems.append(f"node {r.node!r} queries data sources, and this flow has none")
                elif r.name != "*" and store.get(r.name) is None:
                    problems.append(f"node {r.node!r} names data source {r.name!r}, which is not registered")
            if r.kind in _STORE_KINDS:
                attr, label = _STORE_KINDS[r.kind]
                stores = getattr(self, attr)
                if r.name not in stores:
                    known = ", ".join(sorted(stores)) or "none"
                    problems.append(
                        f"node {r.node!r} names {label} {r.name!r}, which is not configured (configured: {known})"
                    )
        if problems:
            raise FlowLoadError(f"flow {dag.name!r} cannot load: " + "; ".join(problems))
