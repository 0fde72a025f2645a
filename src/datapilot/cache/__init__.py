"""The semantic cache for LLM answers: ModelCache-compatible, embedded by default, built into serving.

Public API:

* ``SemanticCache`` (async core) and ``SyncSemanticCache`` (blocking wrapper): ``insert``, ``query``,
  ``remove``, ``truncate``, ``stats``, ``query_log``, per-scope ``policy``/``set_policy``, and feedback
  on hits (``feedback``, ``feedback_log``, ``feedback_pairs``; see ``_feedback``).
* ``Scope``: a model plus an optional tenant; scopes never see each other's entries.
* ``CachedLLMClient``: any ``LLMClient`` with the cache in front (what the server uses).
* Seams with their registries: ``Embedder`` (``register_embedder``), ``Reranker``
  (``register_reranker``), ``VectorIndex`` (``FaissIndex``, ``MilvusIndex``), the scalar ``SQLStore``.
  Embedders and indexes are defined in ``datapilot.retrieval`` and re-exported here.

How the key and the similarity work is documented in ``datapilot.cache._key`` and ``_cache``.
"""

from datapilot.cache._bench import DEFAULT_SWEEP, FALSE_KINDS, default_data_file, load_pairs, run_bench, write_outputs
from datapilot.cache._cache import SemanticCache, SyncSemanticCache
from datapilot.cache._chatbench import calibrate, default_chat_file, run_chat_bench
from datapilot.cache._client import CacheDecision, CachedLLMClient, request_params_key
from datapilot.cache._guards import guard
from datapilot.cache._key import CacheKey, key_for_messages, key_for_prompt, params_key
from datapilot.cache._operators import CacheLookupOperator, CacheStoreOperator, FlowCache
from datapilot.cache._rerank import (
    ClientReranker,
    CrossEncoderReranker,
    Reranker,
    RerankerContext,
    make_reranker,
    register_reranker,
)
from datapilot.cache._sql import SQLStore
from datapilot.cache._train import train_reranker
from datapilot.cache._types import CacheResult, Entry, FeedbackRecord, LogRecord, Scope, Stats
from datapilot.retrieval import (
    ClientEmbedder,
    Embedder,
    EmbedderContext,
    FaissIndex,
    HashEmbedder,
    MilvusIndex,
    SentenceTransformerEmbedder,
    VectorIndex,
    embedder_kinds,
    make_embedder,
    register_embedder,
)

__all__ = [
    "DEFAULT_SWEEP",
    "FALSE_KINDS",
    "CacheDecision",
    "CacheKey",
    "CacheLookupOperator",
    "CacheResult",
    "CacheStoreOperator",
    "CachedLLMClient",
    "ClientEmbedder",
    "ClientReranker",
    "CrossEncoderReranker",
    "Embedder",
    "EmbedderContext",
    "Entry",
    "FaissIndex",
    "FeedbackRecord",
    "FlowCache",
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
    "calibrate",
    "default_chat_file",
    "default_data_file",
    "embedder_kinds",
    "guard",
    "key_for_messages",
    "key_for_prompt",
    "load_pairs",
    "make_embedder",
    "make_reranker",
    "params_key",
    "register_embedder",
    "register_reranker",
    "request_params_key",
    "run_bench",
    "run_chat_bench",
    "train_reranker",
    "write_outputs",
]
