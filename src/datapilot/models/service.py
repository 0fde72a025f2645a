"""``ModelService``: what a server serves: answers, embeddings, a model list, and a lifecycle.

Implemented by ``ModelManager`` (models in this process) and by the cluster's ``RoutingClient``
(models on workers, reached through the routing table).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from datapilot.core.config import ModelConfig, Settings
from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelInfo, ModelOutput, ModelRequest, RerankOutput
from datapilot.models._measure import RecordSink


@runtime_checkable
class ModelService(Protocol):
    sink: RecordSink | None
    started: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, request: ModelRequest) -> ModelOutput: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput: ...

    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput: ...

    async def models(self) -> list[ModelInfo]: ...


async def model_info(service: ModelService, name: str) -> ModelInfo:
    from datapilot.core.errors import ModelNotFoundError

    for info in await service.models():
        if info.name == name:
            return info
    raise ModelNotFoundError(f"the model {name!r} does not exist", param="model")


def served_config(settings: Settings, service: object, name: str) -> ModelConfig | None:
    """A model's configuration: the serving client's own (``model_config``: models defined at run time
    included), else the settings'."""
    own = getattr(service, "model_config", None)
    found = own(name) if callable(own) else None
    return found if isinstance(found, ModelConfig) else settings.model(name)
