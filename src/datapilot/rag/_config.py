"""Typed knowledge settings with named defaults.

``KnowledgeSettings.from_settings`` reads a ``knowledge`` section from the platform settings when the
settings object has one, so the same object works before and after that section is configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from datapilot.core.config import DEFAULT_CHAT_MODEL, CacheEmbedderConfig, Settings

DEFAULT_CHUNK_TOKENS = 160
DEFAULT_CHUNK_OVERLAP = 32
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024
DEFAULT_TOP_K = 4
DEFAULT_CANDIDATES = 40  # per retriever, before fusion
DEFAULT_RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)


class ChunkingConfig(BaseModel):
    """How a document is cut into chunks; set per space, overridable per document."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field("size", description="size, paragraph, separator or markdown (a chunker registry name)")
    chunk_size: int = Field(DEFAULT_CHUNK_TOKENS, ge=16, le=8192, description="the most tokens in a chunk")
    chunk_overlap: int = Field(DEFAULT_CHUNK_OVERLAP, ge=0, le=4096, description="tokens shared by neighbours")
    separator: str = Field("\n\n", min_length=1, description="for the separator strategy")


class KnowledgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedder: CacheEmbedderConfig = Field(default_factory=CacheEmbedderConfig)
    vector: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = Field(None, description="Milvus server URL, or a milvus-lite file path")
    milvus_token: SecretStr | None = None
    db_path: Path | None = Field(None, description="SQLite file; default DATAPILOT_HOME/knowledge/knowledge.db")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1)
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=100)
    candidates: int = Field(DEFAULT_CANDIDATES, ge=1, le=1000)
    rrf_k: int = Field(DEFAULT_RRF_K, ge=1)
    rerank_model: str | None = Field(None, description="a served rerank model; reranks the fused candidates")
    chat_model: str = DEFAULT_CHAT_MODEL
    max_context_chars: int = Field(6000, ge=200, description="passage text put into one prompt, at most")
    ingest_workers: int = Field(2, ge=1, le=16, description="documents parsed and embedded at once")
    embed_batch: int = Field(128, ge=1, le=1024, description="chunks per embedding call during ingestion")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> KnowledgeSettings:
        section: Any = getattr(settings, "knowledge", None)
        base = section.model_dump() if isinstance(section, BaseModel) else dict(section or {})
        return cls.model_validate({**base, **overrides})

    def database(self, home: Path) -> Path:
        return self.db_path or home / "knowledge" / "knowledge.db"
