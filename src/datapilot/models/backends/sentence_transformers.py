"""Embeddings from a local sentence-transformers model folder (default: the bundled MiniLM).

Loads strictly offline: no code path may fetch weights from a hub.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from datapilot.core.errors import MissingDependencyError, ModelNotReadyError
from datapilot.core.types import EmbeddingOutput, Usage
from datapilot.models.backend import EMBEDDING, ModelBackend


class SentenceTransformersBackend(ModelBackend):
    capabilities = frozenset({EMBEDDING})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"st-{self.config.name}")
        self.batch_size = int(self.config.params.get("batch_size", 32))

    @property
    def context_length(self) -> int | None:
        return int(self._model.max_seq_length) if self._model is not None else None

    @property
    def dimension(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync)

    def _load_sync(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError("sentence-transformers", "hf") from None
        transformers.logging.disable_progress_bar()  # one bar per load would clutter the server log
        if self.model_path is None or not self.model_path.is_dir():
            raise ModelNotReadyError(f"model folder not found: {self.model_path}; set `path` for this model")
        device = self.config.params.get("device", "cpu")
        self._model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)

    async def close(self) -> None:
        self._model = None
        self._executor.shutdown(wait=False)

    async def embed(self, texts: list[str]) -> EmbeddingOutput:
        if self._model is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embed_sync, texts)

    def _embed_sync(self, texts: list[str]) -> EmbeddingOutput:
        model = self._model
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32, copy=False)
        encoded = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=model.max_seq_length)[
            "input_ids"
        ]
        return EmbeddingOutput(vectors, Usage(prompt_tokens=sum(len(ids) for ids in encoded)))
