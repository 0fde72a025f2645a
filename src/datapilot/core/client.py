"""The ``LLMClient`` seam: how apps, flows and the server ask any model for an answer.

Implementations: the in-process worker manager, a remote gateway over HTTP, and (later) a
cache-wrapped client. All are async; ``stream`` yields chunks, ``generate`` returns the whole answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from datapilot.core.types import (
    EmbeddingOutput,
    FinishReason,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    TokenLogprob,
    ToolCall,
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


class Collector:
    """Gathers streamed chunks into one answer: text, tool calls rebuilt from their deltas, logprobs."""

    __slots__ = ("_calls", "last", "logprobs", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.logprobs: list[TokenLogprob] | None = None
        self.last: ModelChunk | None = None

    def add(self, chunk: ModelChunk) -> None:
        if chunk.text:
            self.parts.append(chunk.text)
        for delta in chunk.tool_calls or ():
            call = self._calls.setdefault(delta.index, ["", "", ""])
            call[0] = delta.id or call[0]
            call[1] = delta.name or call[1]
            call[2] += delta.arguments
        if chunk.logprobs:
            self.logprobs = [*(self.logprobs or []), *chunk.logprobs]
        if chunk.finish_reason is not None:
            self.last = chunk

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(i, n, a) for _, (i, n, a) in sorted(self._calls.items())]

    def output(self, model: str, finish: FinishReason | None = None) -> ModelOutput:
        last = self.last
        if last is None or last.finish_reason is None:
            raise RuntimeError("stream ended without a finish_reason")
        return ModelOutput(
            self.text,
            finish or last.finish_reason,
            last.usage or Usage(),
            model,
            last.timing,
            self.tool_calls,
            self.logprobs,
        )


async def collect(chunks: AsyncIterator[ModelChunk], model: str = "") -> ModelOutput:
    """Gather a stream into one output; the default ``generate`` for anything that can stream."""
    collector = Collector()
    async for chunk in chunks:
        collector.add(chunk)
    out = collector.output(model)
    out.timing = None
    return out
