"""The API server's view of the cluster: a routing table, least-busy choice, and failover.

``RoutingClient`` is an ``LLMClient``: the OpenAI API serves it exactly as it serves one process's
models. It keeps a routing table that the controller updates (long poll), sends each request to the
healthy instance of the model with the fewest requests in flight, and retries on another instance
when one fails before it produced a token. After the first token a failure ends the request with
a clear error: a half-answer cannot be retried without the client seeing text twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from datapilot.core.aio import stop_task
from datapilot.core.config import ModelConfig
from datapilot.core.errors import (
    DataPilotError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    UpstreamError,
)
from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelInfo, ModelOutput, ModelRequest, RerankOutput
from datapilot.models._measure import MeasuredClient, RecordSink
from datapilot.models.backend import EMBEDDING, RERANK
from datapilot.models.cluster.client import ControllerClient
from datapilot.models.cluster.registry import InstanceInfo
from datapilot.models.remote import RemoteLLMClient

log = logging.getLogger("datapilot.router")

SUSPECT_SECONDS = 5.0
_T = TypeVar("_T")


def is_instance_failure(exc: BaseException) -> bool:
    """The instance, not the request, is at fault: another instance may well succeed."""
    if isinstance(exc, ModelNotReadyError):
        return True
    return isinstance(exc, UpstreamError) and exc.status_code >= 500


class InstanceClient(Protocol):
    """An instance this process reaches without HTTP: an in-process worker (``ModelManager``) or a Ray
    actor's handle (``RayInstance``)."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...

    async def generate(self, request: ModelRequest) -> ModelOutput: ...

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput: ...

    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput: ...

    def batch_stats(self) -> dict[str, dict[str, Any]]: ...


@dataclass(slots=True)
class Route:
    info: InstanceInfo
    in_flight: int = 0
    suspect_until: float = 0.0
    served: int = 0


class RoutingClient(MeasuredClient):
    def __init__(
        self,
        controller: ControllerClient,
        local_workers: Mapping[str, InstanceClient] | None = None,
        sink: RecordSink | None = None,
        poll_wait: float = 10.0,
        api_key: str | None = None,
    ) -> None:
        self.controller = controller
        # Shared with whoever adds workers at run time (ModelHost, RayModels): never replaced by a copy.
        self.local_workers: Mapping[str, InstanceClient] = local_workers if local_workers is not None else {}
        self.sink = sink
        self.poll_wait = poll_wait
        self.api_key = api_key
        self.version = -1
        self.routes: dict[str, Route] = {}
        self._remote: dict[str, RemoteLLMClient] = {}
        self._rr = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._updated = asyncio.Event()
        self.started = False

    # -- routing table ------------------------------------------------------------------------

    def apply(self, version: int, instances: list[InstanceInfo]) -> None:
        old = self.routes
        self.routes = {}
        for info in instances:
            route = old.get(info.instance_id) or Route(info)
            route.info = info
            self.routes[info.instance_id] = route
        self.version = version
        self._updated.set()

    async def refresh(self, wait: float = 0.0) -> None:
        version, instances = await self.controller.table(self.version if wait else None, wait)
        if version != self.version:
            self.apply(version, instances)

    async def start(self) -> None:
        try:
            await self.refresh()
        except DataPilotError as exc:
            log.warning("no routing table yet (%s); retrying in the background", exc)
        self._task = asyncio.create_task(self._follow())
        self.started = True

    async def _follow(self) -> None:
        while True:
            try:
                await self.refresh(wait=self.poll_wait)
            except DataPilotError as exc:
                log.warning("routing table refresh failed: %s", exc)
                await asyncio.sleep(1.0)

    async def wait_for(self, model: str, instances: int = 1, within_s: float = 30.0) -> None:
        """Wait until ``model`` has this many ready instances (used at start-up and by tests)."""
        deadline = time.monotonic() + within_s
        while sum(1 for r in self._ready(model)) < instances:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelNotReadyError(f"model {model!r} has no {instances} ready instance(s) after {within_s}s")
            self._updated.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._updated.wait(), timeout=min(remaining, 1.0))
            if self._task is None:
                await self.refresh()

    async def close(self) -> None:
        await stop_task(self._task)
        for client in self._remote.values():
            await client.aclose()
        await self.controller.aclose()

    # -- choosing an instance -----------------------------------------------------------------

    def batch_stats(self) -> dict[str, dict[str, Any]]:
        """The batching figures of this process's workers' models (see ``ModelManager.batch_stats``)."""
        out: dict[str, dict[str, Any]] = {}
        for wid, manager in self.local_workers.items():
            for model, stats in manager.batch_stats().items():
                out[model if model not in out else f"{model}@{wid}"] = stats
        return out

    def _ready(self, model: str) -> list[Route]:
        return [r for r in self.routes.values() if r.info.model == model and r.info.state == "ready"]

    def _pick(self, model: str, capability: str, tried: set[str], last: DataPilotError | None = None) -> Route:
        now = time.monotonic()
        ready = [r for r in self._ready(model) if r.info.instance_id not in tried]
        healthy = [r for r in ready if r.suspect_until <= now] or ready
        if not healthy:
            if last is not None:
                raise last  # every instance failed: the last failure says why
            self._raise_unavailable(model)
        if capability not in healthy[0].info.capabilities:
            can = ", ".join(healthy[0].info.capabilities) or "nothing"
            raise InvalidRequestError(
                f"model {model!r} does not support {capability} (it supports: {can})",
                param="model",
                code="model_not_supported",
            )
        # Least loaded for its slots: an instance that batches 4 sequences with 3 running has a free
        # slot, and is preferred to starting a queue on a one-at-a-time instance with 1 running.
        low = min(r.in_flight / r.info.slots for r in healthy)
        tied = [r for r in healthy if r.in_flight / r.info.slots == low]
        return tied[next(self._rr) % len(tied)]

    def _raise_unavailable(self, model: str) -> None:
        known = [r for r in self.routes.values() if r.info.model == model]
        if not known:
            models = ", ".join(sorted({r.info.model for r in self.routes.values()})) or "none"
            raise ModelNotFoundError(f"the model {model!r} does not exist; available models: {models}", param="model")
        reasons = "; ".join(
            sorted({f"{r.info.state}: {r.info.error}" if r.info.error else r.info.state for r in known})
        )
        hint = f"; start it with `datapilot model start {model}`" if "stopped" in reasons else ""
        raise ModelNotReadyError(f"model {model!r} has no ready instance ({reasons}){hint}")

    def _client(self, route: Route) -> InstanceClient | RemoteLLMClient:
        info = route.info
        if info.url is None:
            manager = self.local_workers.get(info.worker_id)
            if manager is None:
                raise ModelNotReadyError(f"instance {info.instance_id} is not in this process")
            return manager
        client = self._remote.get(info.url)
        if client is None:
            client = self._remote[info.url] = RemoteLLMClient(info.url, self.api_key)
        return client

    def _failed(self, route: Route, exc: BaseException) -> None:
        route.suspect_until = time.monotonic() + SUSPECT_SECONDS
        log.warning("instance %s failed: %s", route.info.instance_id, exc)

    # -- MeasuredClient sources -----------------------------------------------------------------

    def model_config(self, name: str) -> ModelConfig | None:
        """The configuration of a model an instance in this process serves (a local worker's manager,
        or a Ray actor's); ``None`` when only remote workers serve it."""
        for client in self.local_workers.values():
            own = getattr(client, "model_config", None)
            if callable(own) and isinstance(found := own(name), ModelConfig):
                return found
            config = getattr(client, "config", None)
            if isinstance(config, ModelConfig) and config.name == name:
                return config
        return None

    async def _source_stream(self, request: ModelRequest, kind: str) -> AsyncIterator[ModelChunk]:
        tried: set[str] = set()
        last: DataPilotError | None = None
        while True:
            route = self._pick(request.model, kind, tried, last)
            tried.add(route.info.instance_id)
            sent = 0
            route.in_flight += 1
            try:
                client = self._client(route)
                chunks = (
                    client.unmeasured_stream(request) if isinstance(client, MeasuredClient) else client.stream(request)
                )
                async for chunk in chunks:
                    sent += 1
                    yield chunk
                route.served += 1
                return
            except DataPilotError as exc:
                if not is_instance_failure(exc):
                    raise
                self._failed(route, exc)
                last = exc
                if sent:
                    raise UpstreamError(
                        f"instance {route.info.instance_id} of model {request.model!r} failed after "
                        f"{sent} chunk(s): the answer is incomplete; send the request again",
                        code="instance_failed",
                    ) from exc
            finally:
                route.in_flight -= 1

    async def _source_generate(self, request: ModelRequest, kind: str) -> ModelOutput | None:
        # A whole answer is one call: if its instance fails part-way, nothing reached the client
        # yet, so it is simply asked of another instance.
        return await self._call(request.model, kind, lambda c: c.generate(request))

    async def _source_embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        return await self._call(model, EMBEDDING, lambda c: c.embed(model, texts))

    async def _source_rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput:
        return await self._call(model, RERANK, lambda c: c.rerank(model, query, documents))

    async def _call(self, model: str, capability: str, call: Callable[[Any], Awaitable[_T]]) -> _T:
        """One request/response call, retried on another instance when an instance fails."""
        tried: set[str] = set()
        last: DataPilotError | None = None
        while True:
            route = self._pick(model, capability, tried, last)
            tried.add(route.info.instance_id)
            route.in_flight += 1
            try:
                result = await call(self._client(route))
                route.served += 1
                return result
            except DataPilotError as exc:
                if not is_instance_failure(exc):
                    raise
                self._failed(route, exc)
                last = exc
            finally:
                route.in_flight -= 1

    async def models(self) -> list[ModelInfo]:
        by_model: dict[str, list[Route]] = {}
        for r in self.routes.values():
            by_model.setdefault(r.info.model, []).append(r)
        out = []
        for name, routes in sorted(by_model.items()):
            ready = [r for r in routes if r.info.state == "ready"]
            pick = ready[0] if ready else routes[0]
            detail = None if ready else "; ".join(r.info.error or r.info.state for r in routes)
            out.append(ModelInfo(name, "cluster", frozenset(pick.info.capabilities), pick.info.state, detail=detail))
        return out
