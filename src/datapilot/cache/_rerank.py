"""The optional reranker stage: a model that scores (query, candidate) pairs, e.g. a cross-encoder.

Configured per scope (``CachePolicy.reranker`` names an entry in ``cache.rerankers``); it runs only on
the one candidate that passed the cheap stages, so even a slow model adds one pair per hit.

Kinds: ``cross_encoder`` (a local sentence-transformers folder, loaded in this process), ``datapilot``
(a rerank model served by this DataPilot, or by another through ``base_url``) and ``rerank_api`` (any
endpoint with a Cohere/Jina-style ``POST /rerank``: vLLM, Jina, Cohere, text-embeddings-inference's
OpenAI-style routes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from datapilot.cache._embed import remote_client
from datapilot.core.config import CacheRerankerConfig
from datapilot.core.errors import ConfigError, MissingDependencyError, ModelNotReadyError
from datapilot.core.registry import Registry
from datapilot.core.types import RerankOutput


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


@runtime_checkable
class RerankClient(Protocol):
    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput: ...


class ClientReranker:
    """Scores from a rerank model behind a :class:`RerankClient`: DataPilot's own models or an endpoint."""

    def __init__(self, client: RerankClient, model: str, threshold: float, *, owned: bool = False) -> None:
        self.client, self.model, self.threshold = client, model, threshold
        self._owned = owned  # a client this reranker made (remote); the server's manager is not ours to close

    async def score(self, query: str, candidates: list[str]) -> list[float]:
        out = await self.client.rerank(self.model, query, candidates)
        if len(out.scores) != len(candidates):
            raise ModelNotReadyError(
                f"reranker {self.model!r} returned {len(out.scores)} scores for {len(candidates)} candidates"
            )
        return [float(s) for s in out.scores]

    async def aclose(self) -> None:
        close = getattr(self.client, "aclose", None)
        if self._owned and close is not None:
            await close()


@dataclass(frozen=True)
class RerankerContext:
    """What a factory may use: the serving process's own model client, if any."""

    local_client: Any = None


RerankerFactory = Callable[[CacheRerankerConfig, RerankerContext], Reranker]
_FACTORIES: Registry[RerankerFactory] = Registry("cache reranker kind", error=ConfigError)


def register_reranker(kind: str, factory: RerankerFactory, *, replace: bool = False) -> None:
    _FACTORIES.register(kind, factory, replace=replace)


def make_reranker(config: CacheRerankerConfig, context: RerankerContext | None = None) -> Reranker:
    if config.kind not in _FACTORIES:
        raise ConfigError(f"unknown cache reranker kind {config.kind!r}; known: {', '.join(_FACTORIES.names())}")
    factory = _FACTORIES.get(config.kind)
    return factory(config, context or RerankerContext())


def _cross_encoder(config: CacheRerankerConfig, _: RerankerContext) -> Reranker:
    if not config.path:
        raise ConfigError("reranker kind 'cross_encoder' needs path (a local model folder)")
    return CrossEncoderReranker(config.path, config.threshold)


def _remote(config: CacheRerankerConfig) -> ClientReranker:
    if not config.model or not config.base_url:
        raise ConfigError(f"reranker kind {config.kind!r} needs model and base_url (the API base before /rerank)")
    return ClientReranker(remote_client(config), config.model, config.threshold, owned=True)


def _datapilot(config: CacheRerankerConfig, context: RerankerContext) -> Reranker:
    if not config.model:
        raise ConfigError("reranker kind 'datapilot' needs model (a rerank model DataPilot serves)")
    if config.base_url:
        return _remote(config)
    if not isinstance(context.local_client, RerankClient):
        raise ConfigError("reranker kind 'datapilot' without base_url needs a running DataPilot server")
    return ClientReranker(context.local_client, config.model, config.threshold)


def _rerank_api(config: CacheRerankerConfig, _: RerankerContext) -> Reranker:
    return _remote(config)


register_reranker("cross_encoder", _cross_encoder)
register_reranker("datapilot", _datapilot)
register_reranker("rerank_api", _rerank_api)
