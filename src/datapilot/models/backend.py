"""The ``ModelBackend`` seam and its registry.

A backend hosts one model inside a worker. Built-in backends register exactly as plugins do: by name,
with a loader that imports the implementation only when a model asks for it (optional dependencies
stay optional). Plugins add backends through the ``datapilot.backends`` entry-point group.
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from datapilot.core.client import collect
from datapilot.core.config import ModelConfig
from datapilot.core.errors import ConfigError, InvalidRequestError, ModelNotReadyError
from datapilot.core.registry import Registry
from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelOutput, ModelRequest, RerankOutput

CHAT = "chat"
COMPLETION = "completion"
EMBEDDING = "embedding"
RERANK = "rerank"


T = TypeVar("T")


class ModelBackend(ABC):
    """One loaded model. ``stream`` is the one generation method to write; ``generate`` follows."""

    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ModelConfig, model_path: Path | None) -> None:
        self.config = config
        self.model_path = model_path

    @property
    def context_length(self) -> int | None:
        return None

    @abstractmethod
    async def load(self) -> None:
        """Load weights or open connections; blocking work belongs in a thread."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``load`` took."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        raise InvalidRequestError(
            f"model {self.config.name!r} does not generate text", param="model", code="model_not_supported"
        )

    async def generate(self, request: ModelRequest) -> ModelOutput:
        return await collect(self.stream(request), self.config.name)

    async def embed(self, texts: list[str]) -> EmbeddingOutput:
        raise InvalidRequestError(
            f"model {self.config.name!r} does not produce embeddings",
            param="model",
            code="model_not_supported",
        )

    async def rerank(self, query: str, documents: list[str]) -> RerankOutput:
        raise InvalidRequestError(
            f"model {self.config.name!r} does not rerank", param="model", code="model_not_supported"
        )


class ThreadedBackend(ModelBackend):
    """A backend whose model lives on one worker thread (llama.cpp, transformers, sentence-transformers
    are not thread-safe): ``load`` runs ``_load_sync`` there, and every call goes through ``in_thread``,
    one at a time, in arrival order."""

    thread_prefix: ClassVar[str] = "model"

    def __init__(self, config: ModelConfig, model_path: Path | None) -> None:
        super().__init__(config, model_path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.thread_prefix}-{config.name}")

    async def load(self) -> None:
        await self.in_thread(self._load_sync)

    @abstractmethod
    def _load_sync(self) -> None:
        """Load the model (on the backend's thread)."""

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def model_folder(self) -> Path:
        """The model's folder, or the error that says to set ``path``."""
        if self.model_path is None or not self.model_path.is_dir():
            raise ModelNotReadyError(f"model folder not found: {self.model_path}; set `path` for this model")
        return self.model_path


BackendLoader = Callable[[], type[ModelBackend]]
# Loaders, not classes: a backend's module (and its optional dependencies) is imported only when a model
# asks for it. A plugin's entry point is kept unloaded too (``ep.load`` is its loader).
_BACKENDS: Registry[BackendLoader] = Registry(
    "backend",
    entry_point_group="datapilot.backends",
    error=ConfigError,
    entry_point_loader=lambda ep: ep.load,
)
_CLASS_LOADERS: dict[type[ModelBackend], BackendLoader] = {}  # one loader per class: registering it again is a no-op


def register_backend(name: str, loader: BackendLoader | type[ModelBackend], *, replace: bool = False) -> None:
    """Register a backend class, or a zero-argument callable that imports and returns it."""
    if isinstance(loader, type):
        cls = loader
        loader = _CLASS_LOADERS.setdefault(cls, lambda: cls)
    _BACKENDS.register(name, loader, replace=replace)


def _lazy(module: str, attr: str) -> BackendLoader:
    def load() -> type[ModelBackend]:
        cls: type[ModelBackend] = getattr(importlib.import_module(module), attr)
        return cls

    return load


def backend_names() -> list[str]:
    return _BACKENDS.names()


def get_backend(name: str) -> type[ModelBackend]:
    return _BACKENDS.get(name)()


def check_backend(name: str) -> None:
    """400 ``param=backend`` unless ``name`` is a registered backend (built-in or plugin): a model defined
    with a backend nobody registered could never load, so it is refused when it is defined."""
    if name not in _BACKENDS:
        raise InvalidRequestError(_BACKENDS.unknown_message(name), param="backend")


for _name, _module, _attr in (
    ("llama_cpp", "datapilot.models.backends.llama_cpp", "LlamaCppBackend"),
    ("openai_compat", "datapilot.models.backends.openai_compat", "OpenAICompatBackend"),
    ("sentence_transformers", "datapilot.models.backends.sentence_transformers", "SentenceTransformersBackend"),
    ("scripted", "datapilot.models.backends.scripted", "ScriptedBackend"),
    ("transformers", "datapilot.models.backends.transformers", "TransformersBackend"),
    ("cross_encoder", "datapilot.models.backends.sentence_transformers", "CrossEncoderBackend"),
    ("vllm", "datapilot.models.backends.vllm", "VLLMBackend"),
):
    register_backend(_name, _lazy(_module, _attr))
