"""Embeddings and reranking from local sentence-transformers folders (default: the bundled MiniLM).

Loads strictly offline: no code path may fetch weights from a hub.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from datapilot.core.errors import MissingDependencyError, ModelNotReadyError
from datapilot.core.types import EmbeddingOutput, RerankOutput, Usage
from datapilot.models.backend import EMBEDDING, RERANK, ThreadedBackend


def _offline() -> None:
    """No code path may fetch weights: pin the Hugging Face libraries offline before they import."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class SentenceTransformersBackend(ThreadedBackend):
    """Embeddings; reranks by cosine similarity of query and document embeddings."""

    capabilities = frozenset({EMBEDDING, RERANK})
    thread_prefix = "st"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self.batch_size = int(self.config.params.get("batch_size", 32))

    @property
    def context_length(self) -> int | None:
        return int(self._model.max_seq_length) if self._model is not None else None

    @property
    def dimension(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    def _load_sync(self) -> None:
        _offline()
        try:
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError("sentence-transformers", "hf") from None
        transformers.logging.disable_progress_bar()  # one bar per load would clutter the server log
        device = self.config.params.get("device", "cpu")
        self._model = SentenceTransformer(str(self.model_folder()), device=device, local_files_only=True)

    async def close(self) -> None:
        self._model = None
        self._executor.shutdown(wait=False)

    async def embed(self, texts: list[str]) -> EmbeddingOutput:
        if self._model is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        return await self.in_thread(self._embed_sync, texts)

    def _embed_sync(self, texts: list[str]) -> EmbeddingOutput:
        model = self._model
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32, copy=False)
        return EmbeddingOutput(vectors, Usage(prompt_tokens=self._count(texts)))

    def _count(self, texts: list[str]) -> int:
        model = self._model
        encoded = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=model.max_seq_length)[
            "input_ids"
        ]
        return sum(len(ids) for ids in encoded)

    async def rerank(self, query: str, documents: list[str]) -> RerankOutput:
        out = await self.embed([query, *documents])
        scores = out.vectors[1:] @ out.vectors[0]
        return RerankOutput([float(x) for x in scores], out.usage)


class CrossEncoderBackend(ThreadedBackend):
    """Reranks with a local cross-encoder folder (sentence-transformers ``CrossEncoder``)."""

    capabilities = frozenset({RERANK})
    thread_prefix = "ce"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None

    def _load_sync(self) -> None:
        _offline()
        try:
            from sentence_transformers import CrossEncoder
        except ImportError:
            raise MissingDependencyError("sentence-transformers", "hf") from None
        self._model = CrossEncoder(
            str(self.model_folder()), device=self.config.params.get("device", "cpu"), local_files_only=True
        )

    async def close(self) -> None:
        self._model = None
        self._executor.shutdown(wait=False)

    async def rerank(self, query: str, documents: list[str]) -> RerankOutput:
        if self._model is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        return await self.in_thread(self._rerank_sync, query, documents)

    def _rerank_sync(self, query: str, documents: list[str]) -> RerankOutput:
        scores = self._model.predict([(query, d) for d in documents], convert_to_numpy=True)
        scores = np.asarray(scores, dtype=np.float64).reshape(len(documents), -1)[:, -1]
        tokens = self._model.tokenizer([query] * len(documents), documents)["input_ids"]
        return RerankOutput([float(x) for x in scores], Usage(sum(len(t) for t in tokens)))
