"""Embedders and vector indexes: the implementations behind the ``Embedder`` and ``VectorIndex`` seams
of ``datapilot.core.retrieval``, shared by the cache, knowledge retrieval, text-to-SQL and AWEL flows.

Public API:

* Embedders, by name through ``make_embedder`` (``register_embedder`` adds kinds): ``minilm`` (a local
  sentence-transformers folder, by default the bundled all-MiniLM-L6-v2, on ONNX Runtime when it can),
  ``datapilot`` / ``openai`` (``ClientEmbedder`` over an ``EmbeddingClient``), ``hash`` (a test seam).
* Indexes: ``FaissIndex`` (embedded, snapshotted to files), ``MilvusIndex`` (production) and
  ``InMemoryVectorIndex`` (numpy; tests and flows).

This module sits with the modules and imports ``core`` (and, lazily, ``datapilot.models`` for the
remote HTTP client).
"""

from datapilot.core.retrieval import Embedder, Hit, Signature, VectorIndex
from datapilot.retrieval._embedders import (
    ClientEmbedder,
    EmbedderContext,
    EmbedderFactory,
    HashEmbedder,
    SentenceTransformerEmbedder,
    bundled_minilm_path,
    embedder_kinds,
    make_embedder,
    pool_windows,
    register_embedder,
    remote_client,
    weights_stamp,
    word_windows,
)
from datapilot.retrieval._index import IVF_FROM, FaissIndex, InMemoryVectorIndex, MilvusIndex

__all__ = [
    "IVF_FROM",
    "ClientEmbedder",
    "Embedder",
    "EmbedderContext",
    "EmbedderFactory",
    "FaissIndex",
    "HashEmbedder",
    "Hit",
    "InMemoryVectorIndex",
    "MilvusIndex",
    "SentenceTransformerEmbedder",
    "Signature",
    "VectorIndex",
    "bundled_minilm_path",
    "embedder_kinds",
    "make_embedder",
    "pool_windows",
    "register_embedder",
    "remote_client",
    "weights_stamp",
    "word_windows",
]
