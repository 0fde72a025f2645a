"""Value types of the cache: scopes, entries, query results, stats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from datapilot.core.errors import InvalidRequestError

MAX_SCOPE_PART = 200


@dataclass(slots=True, frozen=True)
class Scope:
    """A tenant's slice of the cache: a model and, optionally, a tenant (team, user, app).

    Every store and index keys on ``key``, so two scopes never see each other's entries.
    """

    model: str
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidRequestError("scope.model must be a non-empty string", param="scope.model")
        if len(self.model) > MAX_SCOPE_PART or (self.tenant is not None and len(self.tenant) > MAX_SCOPE_PART):
            raise InvalidRequestError(f"scope parts are limited to {MAX_SCOPE_PART} characters", param="scope")
        if self.tenant is not None and not isinstance(self.tenant, str):
            raise InvalidRequestError("scope.tenant must be a string", param="scope.tenant")

    @property
    def key(self) -> str:
        # JSON keeps it unambiguous: no separator inside a model name can make two scopes collide.
        return json.dumps([self.model, self.tenant or ""], ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> Scope:
        model, tenant = json.loads(key)
        return cls(model, tenant or None)

    @classmethod
    def parse(cls, value: Any) -> Scope:
        """From ModelCache's ``{"model": ...}`` (plus optional ``tenant`` or ``user``), or a plain string."""
        if isinstance(value, Scope):
            return value
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, dict):
            raise InvalidRequestError("scope must be an object with a 'model' field", param="scope")
        tenant = value.get("tenant", value.get("user"))
        if tenant is not None and not isinstance(tenant, str):
            raise InvalidRequestError("scope.tenant must be a string", param="scope.tenant")
        return cls(value.get("model"), tenant or None)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str]:
        return {"model": self.model, **({"tenant": self.tenant} if self.tenant else {})}


@dataclass(slots=True)
class CacheResult:
    """The answer to a lookup: a hit carries the stored answer and the question it was stored under."""

    hit: bool
    answer: str | None = None
    similarity: float | None = None  # cosine of the best candidate (also on a miss, when there was one)
    hit_query: str | None = None
    id: int | None = None
    reason: str = ""  # why a miss missed: "empty", "below_threshold", "context", "guard:numbers", ...
    embed_ms: float = 0.0
    lookup_ms: float = 0.0
    # The embeddings computed for the lookup, so a miss can be stored without embedding twice.
    vectors: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hit": self.hit,
            "answer": self.answer,
            "similarity": None if self.similarity is None else round(self.similarity, 6),
            "hit_query": self.hit_query,
            "id": self.id,
            "reason": self.reason,
            "embed_ms": round(self.embed_ms, 3),
            "lookup_ms": round(self.lookup_ms, 3),
        }


@dataclass(slots=True)
class Entry:
    """A stored row, as the scalar store returns it."""

    id: int
    scope: str
    question: str
    context: str
    context_hash: str
    params_key: str
    answer: str
    created_at: float
    expires_at: float | None = None
    hit_count: int = 0
    last_hit_at: float | None = None
    context_vector: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "context": self.context,
            "answer": self.answer,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "hit_count": self.hit_count,
            "last_hit_at": self.last_hit_at,
        }


@dataclass(slots=True)
class NewEntry:
    """A row to write: text, key parts and the embeddings already computed for it."""

    scope: str
    question: str
    context: str
    context_hash: str
    params_key: str
    answer: str
    vector: Any
    context_vector: Any
    created_at: float
    expires_at: float | None


@dataclass(slots=True)
class LogRecord:
    scope: str
    query: str
    hit: bool
    hit_query: str | None
    similarity: float | None
    latency_ms: float
    created_at: float
    entry_id: int | None = None
    lookup_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": Scope.from_key(self.scope).to_dict(),
            "query": self.query,
            "hit": self.hit,
            "hit_query": self.hit_query,
            "similarity": self.similarity,
            "latency_ms": self.latency_ms,
            "lookup_ms": self.lookup_ms,
            "created_at": self.created_at,
            "id": self.entry_id,
        }


@dataclass(slots=True)
class FeedbackRecord:
    """A person's (or a client's) mark on one cache hit: was ``entry_id``'s answer right for ``probe``?

    ``question`` is the stored question the hit was served under; ``entry_threshold`` the entry's own
    threshold once this mark counted (only on the record ``SemanticCache.feedback`` returns)."""

    id: int
    scope: str
    entry_id: int
    probe: str
    context_hash: str
    similarity: float
    right: bool
    created_at: float
    question: str = ""
    entry_threshold: float | None = None
    vector: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "scope": Scope.from_key(self.scope).to_dict(),
            "entry_id": self.entry_id,
            "probe": self.probe,
            "question": self.question,
            "similarity": round(self.similarity, 6),
            "right": self.right,
            "created_at": self.created_at,
        }
        if self.entry_threshold is not None:
            out["entry_threshold"] = round(self.entry_threshold, 6)
        return out

    def pair(self) -> dict[str, Any]:
        """The mark as a labelled question pair, in the shape of the repository's pair files."""
        return {"a": self.question, "b": self.probe, "label": 1 if self.right else 0}


@dataclass(slots=True)
class Stats:
    scope: dict[str, str]
    entries: int
    queries: int
    hits: int
    hit_rate: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    lookup_p50_ms: float | None
    lookup_p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "entries": self.entries,
            "queries": self.queries,
            "hits": self.hits,
            "hit_rate": self.hit_rate,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "lookup_p50_ms": self.lookup_p50_ms,
            "lookup_p99_ms": self.lookup_p99_ms,
        }
