"""Per-request measurement shared by every client that serves answers (local manager, router).

Subclasses say where answers come from; this base measures first-token latency, total latency and
throughput around them, and reports one ``RequestRecord`` per request to an optional sink. Every
model call passes here, so an optional ``gate`` (the server's limits, ``datapilot.core.limits``) is
asked first: it refuses a call over a rate limit or budget before the source is touched (a
stream's refusal comes before its first chunk, so the API answers a real 429), and is told the
call's real usage when it ends. A refused call is not charged.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from datapilot.core.audit import audit_model
from datapilot.core.client import Collector
from datapilot.core.errors import DataPilotError
from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelOutput, ModelRequest, RerankOutput, Timing, Usage
from datapilot.models.backend import CHAT, COMPLETION, EMBEDDING, RERANK


@dataclass(slots=True)
class RequestRecord:
    """What was measured for one request; ``status`` is ok, cancelled or an error type."""

    model: str
    kind: str
    stream: bool
    status: str
    usage: Usage
    timing: Timing


RecordSink = Callable[[RequestRecord], None]
Charge = Callable[[Usage], None]


class CallGate(Protocol):
    """Admits model calls (``datapilot.core.limits.LimitGate``)."""

    def admit(self, model: str, kind: str) -> Charge:
        """Raise to refuse a call to ``model``; else what to tell the call's usage when it ends."""
        ...


_Out = TypeVar("_Out", EmbeddingOutput, RerankOutput)


def error_status(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return exc.error_type if isinstance(exc, DataPilotError) else "server_error"


def _no_charge(_: Usage) -> None:
    return None


class MeasuredClient(ABC):
    sink: RecordSink | None = None
    gate: CallGate | None = None

    def _admit(self, model: str, kind: str) -> Charge:
        audit_model(model)  # the audit log names the models a request used, those apps chose included
        gate = self.gate
        return _no_charge if gate is None else gate.admit(model, kind)

    @abstractmethod
    def _source_stream(self, request: ModelRequest, kind: str) -> AsyncIterator[ModelChunk]:
        """Chunks of the answer; raise for a bad request before returning when possible."""

    async def _source_generate(self, request: ModelRequest, kind: str) -> ModelOutput | None:
        """A whole answer, for sources that cannot stream it cheaper; ``None``: collect the stream."""
        return None

    @abstractmethod
    async def _source_embed(self, model: str, texts: list[str]) -> EmbeddingOutput: ...

    @abstractmethod
    async def _source_rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput: ...

    def _record(
        self, model: str, kind: str, stream: bool, status: str, usage: Usage, timing: Timing, charge: Charge
    ) -> None:
        """The call ended: charge its usage to the gate's limits, and report it to the sink."""
        charge(usage)
        if self.sink is not None:
            self.sink(RequestRecord(model, kind, stream, status, usage, timing))

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        kind = CHAT if request.is_chat else COMPLETION
        charge = self._admit(request.model, kind)  # a refusal raises here, before the source starts
        return self._measure_stream(request, kind, self._source_stream(request, kind), True, charge)

    def unmeasured_stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """The answer without this layer's measurement, for a caller that measures it itself."""
        return self._source_stream(request, CHAT if request.is_chat else COMPLETION)

    async def _measure_stream(
        self,
        request: ModelRequest,
        kind: str,
        chunks: AsyncIterator[ModelChunk],
        streaming: bool,
        charge: Charge = _no_charge,
    ) -> AsyncIterator[ModelChunk]:
        timing = Timing()
        produced = 0
        status = "cancelled"
        usage = Usage()
        try:
            async for chunk in chunks:
                if chunk.has_content:
                    timing.mark_token()
                    produced += 1
                if chunk.finish_reason is not None:
                    timing.finish()
                    usage = chunk.usage or Usage(0, produced)  # counted when the source gave none
                    chunk.timing, chunk.usage, status = timing, usage, "ok"
                yield chunk
        except BaseException as exc:
            # Closed after the finishing chunk (a reader that stops at finish_reason): the answer was whole.
            if status != "ok" or not isinstance(exc, GeneratorExit | asyncio.CancelledError):
                status = error_status(exc)
            raise
        finally:
            if timing.finished_at is None:
                timing.finish()
                usage = Usage(0, produced)
            self._record(request.model, kind, streaming, status, usage, timing, charge)

    async def generate(self, request: ModelRequest) -> ModelOutput:
        kind = CHAT if request.is_chat else COMPLETION
        charge = self._admit(request.model, kind)
        timing = Timing()
        try:
            out = await self._source_generate(request, kind)
        except BaseException as exc:
            timing.finish()
            self._record(request.model, kind, False, error_status(exc), Usage(), timing, charge)
            raise
        if out is not None:
            timing.finish()
            inner = out.timing.ttft_s if out.timing is not None else None
            if inner is not None:  # the source measured its first token; place it on this clock
                timing.first_token_at = timing.started + inner
            out.timing, out.model = timing, request.model
            self._record(request.model, kind, False, "ok", out.usage, timing, charge)
            return out
        # Collected from the stream, so first-token latency is measured here too.
        collector = Collector()
        async for chunk in self._measure_stream(request, kind, self._source_stream(request, kind), False, charge):
            collector.add(chunk)
        if collector.last is None or collector.last.timing is None:
            raise DataPilotError(f"model {request.model!r} ended its answer without a finish reason")
        return collector.output(request.model)

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        charge = self._admit(model, EMBEDDING)
        return await self._measured(model, EMBEDDING, self._source_embed(model, texts), charge)

    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput:
        charge = self._admit(model, RERANK)
        return await self._measured(model, RERANK, self._source_rerank(model, query, documents), charge)

    async def _measured(self, model: str, kind: str, work: Awaitable[_Out], charge: Charge) -> _Out:
        timing = Timing()
        try:
            out = await work
        except BaseException as exc:
            timing.finish()
            self._record(model, kind, False, error_status(exc), Usage(), timing, charge)
            raise
        timing.finish()
        self._record(model, kind, False, "ok", out.usage, timing, charge)
        return out
