"""The environment a flow runs in, and the small seams it owns until the real modules arrive.

``FlowResources`` holds the model clients and named stores that ready operators use; checking a
DAG against it fails at load time, naming any model or store that is not configured.

Seams owned here: ``VectorIndex`` (the in-memory numpy index is the embedded default until the
faiss store of the RAG issue), ``FlowCache`` (an exact-match in-memory cache; the semantic cache
plugs in behind the same two methods) and ``ChatHistory``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from datapilot.awel._errors import FlowLoadError
from datapilot.core.client import EmbeddingClient, LLMClient
from datapilot.core.errors import ConfigError
from datapilot.core.types import Message, ModelOutput, ModelRequest

if TYPE_CHECKING:
    from datapilot.awel._dag import DAG

DEFAULT_VECTOR_STORE = "embedded"
DEFAULT_CACHE = "default"
DEFAULT_HISTORY = "default"


@dataclass(slots=True)
class Hit:
    id: str
    score: float
    payload: Any


@runtime_checkable
class VectorIndex(Protocol):
    def add(self, vectors: np.ndarray, payloads: list[Any], ids: list[str] | None = None) -> list[str]: ...

    def search(self, vector: np.ndarray, k: int, filter: Callable[[Any], bool] | None = None) -> list[Hit]: ...

    def delete(self, ids: list[str]) -> int: ...

    def __len__(self) -> int: ...


class InMemoryVectorIndex:
    """Exact inner-product search over L2-normalised float32 vectors in one numpy matrix."""

    def __init__(self) -> None:
        self._matrix: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._ids: list[str] = []
        self._payloads: list[Any] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, vectors: np.ndarray, payloads: list[Any], ids: list[str] | None = None) -> list[str]:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(payloads):
            raise ValueError("add() takes an [n, d] matrix and n payloads")
        if len(self._ids) and vectors.shape[1] != self._matrix.shape[1]:
            raise ValueError(f"vectors have {vectors.shape[1]} dimensions; this index holds {self._matrix.shape[1]}")
        ids = ids or [uuid.uuid4().hex for _ in payloads]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        self._matrix = vectors if not len(self._ids) else np.vstack([self._matrix, vectors])
        self._ids.extend(ids)
        self._payloads.extend(payloads)
        return ids

    def search(self, vector: np.ndarray, k: int, filter: Callable[[Any], bool] | None = None) -> list[Hit]:
        if not self._ids:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        q = q / (float(np.linalg.norm(q)) or 1.0)
        scores = self._matrix @ q
        hits: list[Hit] = []
        for i in np.argsort(-scores):
            if filter is None or filter(self._payloads[i]):
                hits.append(Hit(self._ids[i], float(scores[i]), self._payloads[i]))
                if len(hits) >= k:
                    break
        return hits

    def delete(self, ids: list[str]) -> int:
        drop = set(ids)
        keep = [i for i, x in enumerate(self._ids) if x not in drop]
        removed = len(self._ids) - len(keep)
        self._matrix = self._matrix[keep] if keep else np.zeros((0, 0), dtype=np.float32)
        self._ids = [self._ids[i] for i in keep]
        self._payloads = [self._payloads[i] for i in keep]
        return removed


@runtime_checkable
class FlowCache(Protocol):
    """The cache seam for a cached LLM call. The semantic cache implements the same two methods."""

    async def lookup(self, request: ModelRequest) -> ModelOutput | None: ...

    async def store(self, request: ModelRequest, output: ModelOutput) -> None: ...


def request_key(request: ModelRequest) -> str:
    p = request.params
    body = {
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages or []],
        "prompt": request.prompt,
        "params": [p.temperature, p.top_p, p.top_k, p.max_tokens, p.stop, p.seed],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class InMemoryFlowCache:
    """Exact-match cache keyed on the model, the messages and the sampling parameters."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._data: dict[str, ModelOutput] = {}
        self.hits = self.misses = 0

    async def lookup(self, request: ModelRequest) -> ModelOutput | None:
        out = self._data.get(request_key(request))
        if out is None:
            self.misses += 1
        else:
            self.hits += 1
        return out

    async def store(self, request: ModelRequest, output: ModelOutput) -> None:
        if len(self._data) >= self.max_entries:
            self._data.pop(next(iter(self._data)))
        self._data[request_key(request)] = output


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
    "database": ("databases", "database"),
    "cache": ("caches", "cache"),
    "history": ("histories", "chat history store"),
}


@dataclass
class FlowResources:
    """What ready operators reach at run time: model clients and named stores."""

    llm: LLMClient | None = None
    embeddings: EmbeddingClient | None = None
    vector_stores: dict[str, VectorIndex] = field(default_factory=dict)
    databases: dict[str, Path] = field(default_factory=dict)
    caches: dict[str, FlowCache] = field(default_factory=dict)
    histories: dict[str, ChatHistory] = field(default_factory=dict)

    @classmethod
    def embedded(
        cls,
        client: Any = None,
        vector_stores: list[str] | tuple[str, ...] = (DEFAULT_VECTOR_STORE,),
        databases: Mapping[str, str | Path] | None = None,
    ) -> FlowResources:
        """The embedded set-up: one client for chat and embeddings, in-memory stores by name."""
        return cls(
            llm=client,
            embeddings=client,
            vector_stores={n: InMemoryVectorIndex() for n in vector_stores},
            databases={k: Path(v) for k, v in (databases or {}).items()},
            caches={DEFAULT_CACHE: InMemoryFlowCache()},
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
