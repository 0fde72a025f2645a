"""The cache's embedders: defined in ``datapilot.retrieval`` (shared with knowledge and text-to-SQL),
named here for the cache's own modules."""

from datapilot.retrieval import (
    ClientEmbedder,
    Embedder,
    EmbedderContext,
    HashEmbedder,
    SentenceTransformerEmbedder,
    bundled_minilm_path,
    embedder_kinds,
    make_embedder,
    register_embedder,
    remote_client,
)

__all__ = [
    "ClientEmbedder",
    "Embedder",
    "EmbedderContext",
    "HashEmbedder",
    "SentenceTransformerEmbedder",
    "bundled_minilm_path",
    "embedder_kinds",
    "make_embedder",
    "register_embedder",
    "remote_client",
]
