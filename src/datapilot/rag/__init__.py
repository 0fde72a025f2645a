"""Knowledge spaces, ingestion and retrieval: load documents, ask questions, get answers with citations.

Public API:

* ``KnowledgeBase`` (async): spaces (``create_space``, ``spaces``, ``delete_space``), documents
  (``add``/``add_path``/``add_file``/``add_bytes``/``add_text``, ``documents``, ``chunks``,
  ``delete_document``, ``wait``) and ``retrieve`` (hybrid dense + BM25 with reciprocal rank fusion,
  optional rerank, document and metadata filters).
* ``knowledge_chat`` (streamed events: citations, answer deltas, done) and ``answer_question``: the
  ``knowledge`` chat scene.
* ``KnowledgeSettings`` and ``ChunkingConfig``; loaders (``register_loader``, ``load_bytes``) and
  chunkers (``register_chunker``, ``chunk_document``) by name; ``BM25Index``.
* ``KnowledgeRetrieveOperator`` (AWEL ``knowledge_retrieve``) and ``KnowledgeVectorStore``.
"""

from datapilot.rag._awel import KNOWLEDGE_STORE, KnowledgeRetrieveOperator, KnowledgeVectorStore
from datapilot.rag._bm25 import BM25Index
from datapilot.rag._chat import (
    SYSTEM_PROMPT,
    KnowledgeTurn,
    answer_question,
    build_prompt,
    cited_numbers,
    knowledge_chat,
)
from datapilot.rag._chunking import chunk_document, chunker_names, count_tokens, register_chunker
from datapilot.rag._config import ChunkingConfig, KnowledgeSettings
from datapilot.rag._errors import (
    DocumentNotFoundError,
    DocumentParseError,
    FileTooLargeError,
    SpaceNotFoundError,
    UnsupportedFileError,
)
from datapilot.rag._ingest_ray import shippable as ray_shippable
from datapilot.rag._knowledge import MODES, AddResult, KnowledgeBase, RerankClient
from datapilot.rag._loaders import load_bytes, register_loader, supported_extensions
from datapilot.rag._types import (
    ChunkDraft,
    ChunkInfo,
    Citation,
    DocumentInfo,
    IngestStatus,
    KnowledgeAnswer,
    KnowledgeChatEvent,
    LoadedDocument,
    Passage,
    Segment,
    SpaceInfo,
)

__all__ = [
    "KNOWLEDGE_STORE",
    "MODES",
    "SYSTEM_PROMPT",
    "AddResult",
    "BM25Index",
    "ChunkDraft",
    "ChunkInfo",
    "ChunkingConfig",
    "Citation",
    "DocumentInfo",
    "DocumentNotFoundError",
    "DocumentParseError",
    "FileTooLargeError",
    "IngestStatus",
    "KnowledgeAnswer",
    "KnowledgeBase",
    "KnowledgeChatEvent",
    "KnowledgeRetrieveOperator",
    "KnowledgeSettings",
    "KnowledgeTurn",
    "KnowledgeVectorStore",
    "LoadedDocument",
    "Passage",
    "RerankClient",
    "Segment",
    "SpaceInfo",
    "SpaceNotFoundError",
    "UnsupportedFileError",
    "answer_question",
    "build_prompt",
    "chunk_document",
    "chunker_names",
    "cited_numbers",
    "count_tokens",
    "knowledge_chat",
    "load_bytes",
    "ray_shippable",
    "register_chunker",
    "register_loader",
    "supported_extensions",
]
