"""The FastAPI assembly: /v1 and /api/v1 (OpenAI-compatible), /api/..., /health, /metrics, the UI at /."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from datapilot import __version__
from datapilot.apps import SceneService
from datapilot.apps.services import AgentService, CacheService, DataService, KnowledgeService
from datapilot.awel import set_ray_address
from datapilot.core.client import EmbeddingClient
from datapilot.core.config import CacheEmbedderConfig, Settings
from datapilot.core.errors import ConfigError
from datapilot.core.keys import KeyStore
from datapilot.core.limits import Budget, LimitGate, ModelLimits, UsageLedger
from datapilot.core.outbound import OutboundPolicy, set_outbound_policy
from datapilot.models.manager import ModelManager
from datapilot.models.service import ModelService, served_config
from datapilot.server.agents_api import build_agents_router
from datapilot.server.audit import AuditLog, AuditMiddleware, build_audit_router
from datapilot.server.awel_api import build_awel_router, build_flow_manager, load_flows
from datapilot.server.cache_api import include_cache_routes
from datapilot.server.chat_api import build_chat_router
from datapilot.server.datasource_api import build_datasource_router
from datapilot.server.deps import CONFIG_KEY_ID, Services, require_api_key, services
from datapilot.server.errors import error_body, install_error_handlers
from datapilot.server.examples_api import build_examples_router
from datapilot.server.keys_api import build_keys_router
from datapilot.server.knowledge_api import build_knowledge_router
from datapilot.server.metrics import ServingMetrics, build_metrics_router
from datapilot.server.openai_api import build_router
from datapilot.server.sse import install_event_schemas
from datapilot.server.usage_api import build_usage_router
from datapilot.web import mount_ui

if TYPE_CHECKING:
    from datapilot.core.retrieval import Embedder

log = logging.getLogger("datapilot.server")


class BodyLimit:
    """Refuse request bodies over the configured size before reading them (413).

    File uploads (paths under ``upload_prefixes``) have their own, larger limit; their modules still
    check each file against their own per-file limit.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, upload_bytes: int = 0, upload_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.upload_bytes, self.upload_prefixes = max(upload_bytes, max_bytes), upload_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or ()).get(b"content-length")
            upload = scope.get("path", "").startswith(self.upload_prefixes) if self.upload_prefixes else False
            limit = self.upload_bytes if upload else self.max_bytes
            if length is not None and length.isdigit() and int(length) > limit:
                body = error_body(
                    f"request body of {int(length)} bytes is over the limit of {limit}",
                    "invalid_request_error",
                    code="request_too_large",
                )
                await JSONResponse(body, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Lifecycle(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class SharedEmbedders:
    """One embedder per distinct embedding configuration, for every part of one server: the cache,
    knowledge and the data sources' schema linking all configure MiniLM by default, and it is loaded
    once. Closed after every part that uses it (it starts first)."""

    def __init__(self, settings: Settings, local_client: EmbeddingClient | None = None) -> None:
        self.home, self.local_client = settings.home, local_client
        self._built: dict[str, Embedder] = {}

    @staticmethod
    def key(config: CacheEmbedderConfig) -> str:
        """The configuration as a stable string; secrets compared by value, never shown."""

        def plain(value: Any) -> Any:
            return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

        return json.dumps(config.model_dump(), sort_keys=True, default=plain)

    def get(self, config: CacheEmbedderConfig) -> Embedder | None:
        """The embedder for ``config``, built on first request; ``None`` if it cannot be built here (its
        user then builds it itself and reports the problem when it is used, as without sharing)."""
        key = self.key(config)
        if key not in self._built:
            from datapilot.retrieval import EmbedderContext, make_embedder

            try:
                self._built[key] = make_embedder(config, EmbedderContext(self.home, self.local_client))
            except ConfigError as exc:
                log.warning("embedder %s not shared: %s", config.kind, exc.message)
                return None
        return self._built[key]

    def __len__(self) -> int:
        return len(self._built)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for embedder in self._built.values():
            close = getattr(embedder, "aclose", None)
            if close is not None:
                await close()


def build_limits(settings: Settings, keys: KeyStore, service: object = None) -> LimitGate:
    """The server's rate limits and budgets: each model's limits from its configuration (as ``service``
    serves it, models defined at run time included), tenants' budgets from the key store (re-read every
    ``budget_cache_s``), usage in ``DATAPILOT_HOME/usage.db``."""

    def budget(tenant: str) -> Budget:
        found = keys.budget(tenant)
        return Budget(found.daily_tokens, found.monthly_tokens)

    def limits_of(name: str) -> ModelLimits | None:
        config = served_config(settings, service, name)
        return ModelLimits(config.rpm, config.tpm) if config is not None else None

    return LimitGate(
        UsageLedger.for_home(settings.home, flush_interval_s=settings.limits.flush_interval_s),
        model_limits=limits_of,
        budgets=budget,
        budget_cache_s=settings.limits.budget_cache_s,
        unmetered_keys=frozenset({CONFIG_KEY_ID}),
    )


def create_app(
    settings: Settings,
    manager: ModelService | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    lifecycle: Sequence[Lifecycle] = (),
    limits: bool = True,
) -> FastAPI:
    """Build the server around a ``ModelService``: this process's models by default, or a cluster
    router. ``lifecycle`` objects start in order before the service and close in reverse after it.
    ``limits``: enforce rate limits and budgets and record usage (unless ``[limits] enabled = false``);
    a worker behind an API server leaves them to it, so calls are neither limited nor counted twice."""
    # URLs users give (proxy models, data sources, embedders) are checked against [security]'s policy.
    set_outbound_policy(OutboundPolicy.from_settings(settings.security))
    # Flows whose operators run on Ray (``executor = "ray"``) use the cluster the settings name.
    set_ray_address(settings.ray.address, settings.ray.namespace)
    metrics = ServingMetrics()
    if manager is None:
        manager = ModelManager(settings.models, settings.home, sink=metrics.observe)
    elif manager.sink is None:
        manager.sink = metrics.observe
    service = manager
    local = manager if isinstance(manager, EmbeddingClient) else None
    embedders = SharedEmbedders(settings, local)
    cache_embedders = {
        name: shared for name, cfg in settings.cache.embedders.items() if (shared := embedders.get(cfg)) is not None
    }
    cache = CacheService.from_settings(settings, manager, embedders=cache_embedders)
    knowledge = KnowledgeService.from_settings(settings, manager, embedder=embedders.get(settings.knowledge.embedder))
    data = DataService(settings, manager, embedder=embedders.get(settings.data.embedder))
    state = Services(settings=settings, llm=manager, metrics=metrics, cache=cache, knowledge=knowledge, data=data)
    # Flows call models through the same cache-aware client as every other app-level call.
    state.awel = build_flow_manager(settings, state.chat_llm(), cache=cache.client)
    scenes = state.scenes = SceneService(settings.home / "scenes")
    # Agents remember with the knowledge embedder (the data sources' one when knowledge has none).
    memory_embedder = embedders.get(settings.knowledge.embedder) or data.embedder
    state.agents = AgentService.from_settings(
        settings, memory_embedder, data=data, knowledge=knowledge.knowledge, llm=state.chat_llm()
    )
    # Every model call passes the gate (the service's, which the cache and the apps call through).
    keys = KeyStore.for_home(settings.home)
    gate = build_limits(settings, keys, service) if limits and settings.limits.enabled else None
    if gate is not None:
        if hasattr(service, "gate"):
            service.gate = gate
        else:
            log.warning("the model service %s takes no gate: model calls are not limited", type(service).__name__)
        metrics.attach_limits(gate)
    # The audit log starts first and closes last: what the others do while closing is still recorded.
    audit = AuditLog.from_settings(settings.audit, settings.home) if settings.audit.enabled else None
    # The usage ledger closes after every part that calls models, so their last calls are written.
    first = (*((audit,) if audit is not None else ()), *((gate,) if gate is not None else ()))
    lifecycle = (*first, *lifecycle, embedders, cache, knowledge, data, state.agents)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started: list[Lifecycle] = []
        try:
            for part in lifecycle:
                await part.start()
                started.append(part)
            if not service.started:
                await service.start()
            if state.awel is not None and data.sources is not None:  # the flows' sql operator queries them
                await data.sources.add_sqlite_files(settings.awel.databases)
                state.awel.resources.sources = data.sources
                state.awel.resources.default_source = settings.data.default_source
            await load_flows(settings, app.state.services.awel)
            scenes.load_folder()
            # What start-up allocated (models, indexes, registries) lives as long as the server: moved out
            # of the collector's generations, so full collections under load stay short (the p99 tail).
            gc.collect()
            gc.freeze()
            yield
        finally:
            await service.close()
            for part in reversed(started):
                await part.close()
            keys.close()

    app = FastAPI(title="DataPilot", version=__version__, lifespan=lifespan)
    app.state.services = state
    app.state.audit = audit
    app.state.keys = keys
    app.state.limits = gate
    # deps.require_api_key counts each model-calling request against its key's requests per minute.
    app.state.request_gate = gate.admit_request if gate is not None else None
    knowledge.attach(state.awel)
    install_error_handlers(app)
    install_event_schemas(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.server.max_request_bytes,
        upload_bytes=max(settings.data.max_upload_bytes, settings.knowledge.max_file_bytes * 4),
        upload_prefixes=("/api/datasources/upload", "/api/knowledge/spaces/"),
    )
    if settings.server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.server.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    if audit is not None:  # outermost: refusals by the middlewares above (413) are recorded too
        app.add_middleware(AuditMiddleware, audit=audit, keys=lambda: settings.server.api_keys)

    openai_router = build_router()
    app.include_router(openai_router, prefix="/v1", tags=["openai"])
    # DB-GPT's API server answers under /api/v1; its clients (and openai 0.x) work unchanged.
    app.include_router(openai_router, prefix="/api/v1", tags=["openai"], include_in_schema=False)
    include_cache_routes(app)

    for router in routers:
        app.include_router(router)

    app.include_router(build_awel_router(), prefix="/api/v1/awel", tags=["awel"])
    app.include_router(build_knowledge_router(), prefix="/api/knowledge", tags=["knowledge"])
    app.include_router(build_datasource_router(), prefix="/api/datasources", tags=["data"])
    app.include_router(build_examples_router(), prefix="/api/datasources", tags=["data"])
    app.include_router(build_chat_router(), prefix="/api", tags=["chat"])
    app.include_router(build_agents_router(), prefix="/api/agents", tags=["agents"])
    app.include_router(build_metrics_router(), prefix="/api", tags=["metrics"])
    app.include_router(build_audit_router(), prefix="/api/audit", tags=["audit"])
    app.include_router(build_keys_router(), prefix="/api", tags=["keys"])
    app.include_router(build_usage_router(), prefix="/api", tags=["keys"])

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        infos = await services(request).llm.models()
        return {
            "status": "ok",
            "version": __version__,
            "models": {m.name: {"status": m.status, "error": m.detail} for m in infos},
        }

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        svc = services(request)
        if not settings.server.public_metrics:
            await require_api_key(request)
        ready = {m.name: m.status == "ready" for m in await svc.llm.models()}
        batching = getattr(svc.llm, "batch_stats", None)
        body = svc.metrics.render(ready, batching() if callable(batching) else None)
        return Response(body, media_type="text/plain; version=0.0.4")

    mount_ui(app)  # last: the UI's / and /static never shadow an API route
    return app
