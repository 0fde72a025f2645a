"""The semantic cache for LLM answers: ModelCache-compatible, embedded by default, built into serving.

Public API:

* ``SemanticCache`` (async core) and ``SyncSemanticCache`` (blocking wrapper): ``insert``, ``query``,
  ``remove``, ``truncate``, ``stats``, ``query_log``, per-scope ``policy``/``set_policy``, and feedback
  on hits (``feedback``, ``feedback_log``, ``feedback_pairs``; see ``_feedback``).
* ``Scope``: a model plus an optional tenant; scopes never see each other's entries.
* ``CachedLLMClient``: any ``LLMClient`` with the cache in front (what the server uses).
* Seams with their registries: ``Embedder`` (``register_embedder``), ``Reranker``
  (``register_reranker``), ``VectorIndex`` (``FaissIndex``, ``MilvusIndex``), the scalar ``SQLStore``.

How the key and the similarity work is documented in ``datapilot.cache._key`` and ``_cache``.
"""

from datapilot.cache._cache import SemanticCache, SyncSemanticCache
from datapilot.cache._client import CacheDecision, CachedLLMClient, request_params_key
from datapilot.cache._embed import (
    ClientEmbedder,
    Embedder,
    EmbedderContext,
    HashEmbedder,
    SentenceTransformerEmbedder,
    embedder_kinds,
    make_embedder,
    register_embedder,
)
from datapilot.cache._guards import guard
from datapilot.cache._index import FaissIndex, MilvusIndex, VectorIndex
from datapilot.cache._key import CacheKey, key_for_messages, key_for_prompt, params_key
from datapilot.cache._rerank import (
    ClientReranker,
    CrossEncoderReranker,
    Reranker,
    RerankerContext,
    make_reranker,
    register_reranker,
)
from datapilot.cache._sql import SQLStore
from datapilot.cache._types import CacheResult, Entry, FeedbackRecord, LogRecord, Scope, Stats

__all__ = [
    "CacheDecision",
    "CacheKey",
    "CacheResult",
    "CachedLLMClient",
    "ClientEmbedder",
    "ClientReranker",
    "CrossEncoderReranker",
    "Embedder",
    "EmbedderContext",
    "Entry",
    "FaissIndex",
    "FeedbackRecord",
    "HashEmbedder",
    "LogRecord",
    "MilvusIndex",
    "Reranker",
    "RerankerContext",
    "SQLStore",
    "Scope",
    "SemanticCache",
    "SentenceTransformerEmbedder",
    "Stats",
    "SyncSemanticCache",
    "VectorIndex",
    "embedder_kinds",
    "guard",
    "key_for_messages",
    "key_for_prompt",
    "make_embedder",
    "make_reranker",
    "params_key",
    "register_embedder",
    "register_reranker",
    "request_params_key",
]
