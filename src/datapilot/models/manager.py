"""Model workers and the in-process manager that serves them as an ``LLMClient``.

A ``ModelWorker`` owns one backend and knows its state (pending, loading, ready, failed with the
reason). ``ModelManager`` holds the workers by name, loads them concurrently, measures every request
(first-token latency, total latency, decode tokens/s) and reports it to an optional sink.

Each model's privacy policy (``datapilot.privacy``) is applied here, next to the backend: personal data
is masked before a request reaches a remote model and restored in its answer, or the request refused.
What was masked (kinds and counts) goes to the log and to ``privacy_sink``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

from datapilot.core.config import ModelConfig
from datapilot.core.errors import (
    ConflictError,
    DataPilotError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from datapilot.core.types import (
    EmbeddingOutput,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    RerankOutput,
)
from datapilot.models._measure import MeasuredClient, RecordSink, RequestRecord
from datapilot.models.assets import ProgressFn, resolve_model_path
from datapilot.models.backend import EMBEDDING, RERANK, ModelBackend, get_backend
from datapilot.models.structured import PASSTHROUGH, advertised, prepare, wrap_stream
from datapilot.privacy import Policy, ReportSink, RequestPrivacy, policy_for

log = logging.getLogger("datapilot.models")


class ModelState(StrEnum):
    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


# (model name, step description, done, total); total 0 means "unknown"
LoadProgress = Callable[[str, str, int, int], None]


class ModelWorker:
    def __init__(self, config: ModelConfig, home: Path) -> None:
        self.config = config
        self.home = home
        self.state = ModelState.PENDING
        self.error: str | None = None
        self.backend: ModelBackend | None = None
        self.privacy: Policy = policy_for(config)

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
        self.state = ModelState.STOPPED
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
        caps = advertised(self.backend.capabilities) if self.backend else frozenset()
        return ModelInfo(self.name, self.config.backend, caps, self.state.value, detail=self.error)


class ModelManager(MeasuredClient):
    """Serves every configured model in this process; an ``LLMClient`` and an ``EmbeddingClient``."""

    def __init__(
        self,
        models: Iterable[ModelConfig],
        home: Path,
        sink: RecordSink | None = None,
        privacy_sink: ReportSink | None = None,
    ) -> None:
        self.workers: dict[str, ModelWorker] = {}
        for cfg in models:
            if not cfg.enabled:
                continue
            if cfg.name in self.workers:
                raise InvalidRequestError(f"model {cfg.name!r} is declared twice")
            self.workers[cfg.name] = ModelWorker(cfg, home)
        self.home = home
        self.sink = sink
        # Told what each request had masked or was refused for (kinds and counts, never values): an audit log.
        self.privacy_sink = privacy_sink
        self.started = False

    def batch_stats(self) -> dict[str, dict[str, Any]]:
        """Per model served with batching (``parallel`` > 1): slots, running and waiting sequences, KV
        use and prefix reuse."""
        out: dict[str, dict[str, Any]] = {}
        for name, worker in self.workers.items():
            stats = getattr(worker.backend, "batch_stats", None)
            found = stats() if callable(stats) else None
            if found is not None:
                out[name] = found
        return out

    async def start(self, progress: LoadProgress | None = None) -> None:
        await asyncio.gather(*(w.start(progress) for w in self.workers.values()))
        self.started = True

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()))

    async def add(self, config: ModelConfig, progress: LoadProgress | None = None) -> ModelWorker:
        """Load one more model in this process at run time."""
        if config.name in self.workers:
            raise ConflictError(f"model {config.name!r} already runs on this worker; stop it first")
        worker = self.workers[config.name] = ModelWorker(config, self.home)
        await worker.start(progress)
        return worker

    async def remove(self, name: str) -> None:
        """Stop a model and unload it from this process."""
        await self.worker(name).stop()
        del self.workers[name]

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

    def model_config(self, name: str) -> ModelConfig | None:
        """The configuration of a model served here, defined at start or at run time (``None``: not
        served here): its privacy policy and rate limits apply wherever its requests come from."""
        worker = self.workers.get(name)
        return worker.config if worker is not None else None

    def _privacy(self, worker: ModelWorker, request_id: str, operation: str) -> RequestPrivacy:
        return RequestPrivacy(worker.name, worker.privacy, request_id, operation, self.privacy_sink)

    def _source_stream(self, request: ModelRequest, kind: str) -> AsyncIterator[ModelChunk]:
        worker = self.worker(request.model)
        backend = worker.require(kind)
        caps = backend.capabilities
        privacy = self._privacy(worker, request.request_id, kind)
        sent = prepare(request.model, caps, privacy.request(request))
        return wrap_stream(request, caps, privacy.stream(backend.stream(sent)))

    async def _source_generate(self, request: ModelRequest, kind: str) -> ModelOutput | None:
        worker = self.worker(request.model)
        backend = worker.require(kind)
        if type(backend).generate is ModelBackend.generate:
            return None  # collect the stream, so first-token latency gets measured
        if request.uses_tools and PASSTHROUGH not in backend.capabilities:
            return None  # tool calls are parsed out of the stream
        privacy = self._privacy(worker, request.request_id, kind)
        sent = privacy.request(request)
        return privacy.output(await backend.generate(prepare(request.model, backend.capabilities, sent)))

    async def _source_embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        worker = self.worker(model)
        backend = worker.require(EMBEDDING)
        return await backend.embed(self._privacy(worker, "", EMBEDDING).texts(texts, "input"))

    async def _source_rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput:
        worker = self.worker(model)
        backend = worker.require(RERANK)
        masked = self._privacy(worker, "", RERANK).texts([query, *documents], "query")
        return await backend.rerank(masked[0], masked[1:])


__all__ = ["LoadProgress", "ModelManager", "ModelState", "ModelWorker", "RecordSink", "RequestRecord"]
