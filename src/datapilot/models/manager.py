"""Model workers and the in-process manager that serves them as an ``LLMClient``.

A ``ModelWorker`` owns one backend and knows its state (pending, loading, ready, failed with the
reason). ``ModelManager`` holds the workers by name, loads them concurrently, measures every request
(first-token latency, total latency, decode tokens/s) and reports it to an optional sink.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from datapilot.core.config import ModelConfig
from datapilot.core.errors import DataPilotError, InvalidRequestError, ModelNotFoundError, ModelNotReadyError
from datapilot.core.types import (
    EmbeddingOutput,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    Timing,
    Usage,
)
from datapilot.models.assets import ProgressFn, resolve_model_path
from datapilot.models.backend import CHAT, COMPLETION, EMBEDDING, ModelBackend, get_backend

log = logging.getLogger("datapilot.models")


class ModelState(StrEnum):
    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class RequestRecord:
    """What the manager measured for one request; ``status`` is ok, cancelled or an error type."""

    model: str
    kind: str
    stream: bool
    status: str
    usage: Usage
    timing: Timing


RecordSink = Callable[[RequestRecord], None]
# (model name, step description, done, total); total 0 means "unknown"
LoadProgress = Callable[[str, str, int, int], None]


class ModelWorker:
    def __init__(self, config: ModelConfig, home: Path) -> None:
        self.config = config
        self.home = home
        self.state = ModelState.PENDING
        self.error: str | None = None
        self.backend: ModelBackend | None = None

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self, progress: LoadProgress | None = None) -> None:
        self.state, self.error = ModelState.LOADING, None
        name = self.name
        try:
            files: ProgressFn | None = (lambda d, done, tot: progress(name, d, done, tot)) if progress else None
            path = await asyncio.to_thread(resolve_model_path, self.config, self.home, files)
            if progress:
                progress(name, f"loading {self.config.backend}", 0, 0)
            backend = get_backend(self.config.backend)(self.config, path)
            await backend.load()
        except Exception as exc:  # a model that cannot load must not stop the others
            self.state = ModelState.FAILED
            self.error = exc.message if isinstance(exc, DataPilotError) else f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", name, self.error)
            if progress:
                progress(name, f"failed: {self.error}", 1, 1)
            return
        self.backend, self.state = backend, ModelState.READY
        log.info("model %s ready (%s)", name, self.config.backend)
        if progress:
            progress(name, "ready", 1, 1)

    async def stop(self) -> None:
        backend, self.backend = self.backend, None
        self.state = ModelState.PENDING
        if backend is not None:
            await backend.close()

    def require(self, capability: str) -> ModelBackend:
        if self.state is not ModelState.READY or self.backend is None:
            reason = f": {self.error}" if self.error else ""
            raise ModelNotReadyError(f"model {self.name!r} is {self.state.value}{reason}")
        if capability not in self.backend.capabilities:
            can = ", ".join(sorted(self.backend.capabilities)) or "nothing"
            raise InvalidRequestError(
                f"model {self.name!r} does not support {capability} (it supports: {can})",
                param="model",
                code="model_not_supported",
            )
        return self.backend

    def info(self) -> ModelInfo:
        caps = self.backend.capabilities if self.backend else frozenset()
        return ModelInfo(self.name, self.config.backend, caps, self.state.value, detail=self.error)


class ModelManager:
    """Serves every configured model in this process; an ``LLMClient`` and an ``EmbeddingClient``."""

    def __init__(self, models: Iterable[ModelConfig], home: Path, sink: RecordSink | None = None) -> None:
        self.workers: dict[str, ModelWorker] = {}
        for cfg in models:
            if not cfg.enabled:
                continue
            if cfg.name in self.workers:
                raise InvalidRequestError(f"model {cfg.name!r} is declared twice")
            self.workers[cfg.name] = ModelWorker(cfg, home)
        self.sink = sink
        self.started = False

    async def start(self, progress: LoadProgress | None = None) -> None:
        await asyncio.gather(*(w.start(progress) for w in self.workers.values()))
        self.started = True

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()))

    def worker(self, name: str) -> ModelWorker:
        try:
            return self.workers[name]
        except KeyError:
            known = ", ".join(sorted(self.workers)) or "none"
            raise ModelNotFoundError(
                f"the model {name!r} does not exist; available models: {known}", param="model"
            ) from None

    async def models(self) -> list[ModelInfo]:
        return [w.info() for w in self.workers.values()]

    def _record(
        self, request: ModelRequest, kind: str, stream: bool, status: str, usage: Usage, timing: Timing
    ) -> None:
        if self.sink is not None:
            self.sink(RequestRecord(request.model, kind, stream, status, usage, timing))

    async def generate(self, request: ModelRequest) -> ModelOutput:
        kind = CHAT if request.is_chat else COMPLETION
        backend = self.worker(request.model).require(kind)
        if type(backend).generate is ModelBackend.generate:
            # Collected from the stream, so first-token latency is measured here too.
            parts: list[str] = []
            last = ModelChunk()
            async for chunk in self._stream(request, streaming=False):
                parts.append(chunk.text)
                last = chunk
            assert last.finish_reason is not None and last.timing is not None
            return ModelOutput("".join(parts), last.finish_reason, last.usage or Usage(), request.model, last.timing)
        timing = Timing()
        try:
            out = await backend.generate(request)
        except BaseException as exc:
            timing.finish()
            self._record(request, kind, False, _status(exc), Usage(), timing)
            raise
        timing.finish()
        out.timing, out.model = timing, request.model
        self._record(request, kind, False, "ok", out.usage, timing)
        return out

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        return self._stream(request, streaming=True)

    async def _stream(self, request: ModelRequest, streaming: bool) -> AsyncIterator[ModelChunk]:
        kind = CHAT if request.is_chat else COMPLETION
        backend = self.worker(request.model).require(kind)
        timing = Timing()
        produced = 0
        status = "cancelled"
        usage = Usage()
        try:
            async for chunk in backend.stream(request):
                if chunk.text:
                    timing.mark_token()
                    produced += 1
                if chunk.finish_reason is not None:
                    timing.finish()
                    usage = chunk.usage or Usage(0, produced)
                    chunk.timing, status = timing, "ok"
                yield chunk
        except BaseException as exc:
            status = _status(exc)
            raise
        finally:
            if timing.finished_at is None:
                timing.finish()
                usage = Usage(0, produced)
            self._record(request, kind, streaming, status, usage, timing)

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        backend = self.worker(model).require(EMBEDDING)
        timing = Timing()
        request = ModelRequest(model=model)
        try:
            out = await backend.embed(texts)
        except BaseException as exc:
            timing.finish()
            self._record(request, EMBEDDING, False, _status(exc), Usage(), timing)
            raise
        timing.finish()
        self._record(request, EMBEDDING, False, "ok", out.usage, timing)
        return out


def _status(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return exc.error_type if isinstance(exc, DataPilotError) else "server_error"
