"""The ``LLMClient`` seam: how apps, flows and the server ask any model for an answer.

Implementations: the in-process worker manager, a remote gateway over HTTP, and (later) a
cache-wrapped client. All are async; ``stream`` yields chunks, ``generate`` returns the whole answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from datapilot.core.types import (
    EmbeddingOutput,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    Usage,
)


@runtime_checkable
class LLMClient(Protocol):
    async def generate(self, request: ModelRequest) -> ModelOutput: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...

    async def models(self) -> list[ModelInfo]: ...


@runtime_checkable
class EmbeddingClient(Protocol):
    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput: ...


async def collect(chunks: AsyncIterator[ModelChunk], model: str = "") -> ModelOutput:
    """Gather a stream into one output; the default ``generate`` for anything that can stream."""
    parts: list[str] = []
    finish: ModelChunk | None = None
    async for chunk in chunks:
        parts.append(chunk.text)
        if chunk.finish_reason is not None:
            finish = chunk
    if finish is None or finish.finish_reason is None:
        raise RuntimeError("stream ended without a finish_reason")
    return ModelOutput("".join(parts), finish.finish_reason, finish.usage or Usage(), model)
