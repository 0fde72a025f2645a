"""The optional reranker stage: a model that scores (query, candidate) pairs, e.g. a cross-encoder.

Configured per scope (``CachePolicy.reranker`` names an entry in ``cache.rerankers``); it runs only on
the one candidate that passed the cheap stages, so even a slow model adds one pair per hit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from datapilot.core.config import CacheRerankerConfig
from datapilot.core.errors import ConfigError, MissingDependencyError, ModelNotReadyError


@runtime_checkable
class Reranker(Protocol):
    threshold: float

    async def score(self, query: str, candidates: list[str]) -> list[float]:
        """Higher is more alike; a candidate below ``threshold`` is rejected."""
        ...


class CrossEncoderReranker:
    """A local sentence-transformers ``CrossEncoder`` folder, loaded offline on first use."""

    def __init__(self, path: str, threshold: float) -> None:
        self.path, self.threshold = Path(path), threshold
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import CrossEncoder
            except ImportError:
                raise MissingDependencyError("sentence-transformers", "hf") from None
            if not self.path.is_dir():
                raise ModelNotReadyError(f"reranker folder not found: {self.path}")
            self._model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)
        return self._model

    async def score(self, query: str, candidates: list[str]) -> list[float]:
        def run() -> list[float]:
            scores = self._load().predict([(query, c) for c in candidates])
            return [float(s) for s in scores]

        return await asyncio.to_thread(run)


RerankerFactory = Callable[[CacheRerankerConfig], Reranker]
_FACTORIES: dict[str, RerankerFactory] = {}


def register_reranker(kind: str, factory: RerankerFactory) -> None:
    _FACTORIES[kind] = factory


def make_reranker(config: CacheRerankerConfig) -> Reranker:
    factory = _FACTORIES.get(config.kind)
    if factory is None:
        raise ConfigError(f"unknown cache reranker kind {config.kind!r}; known: {', '.join(sorted(_FACTORIES))}")
    return factory(config)


def _cross_encoder(config: CacheRerankerConfig) -> Reranker:
    if not config.path:
        raise ConfigError("reranker kind 'cross_encoder' needs path (a local model folder)")
    return CrossEncoderReranker(config.path, config.threshold)


register_reranker("cross_encoder", _cross_encoder)
