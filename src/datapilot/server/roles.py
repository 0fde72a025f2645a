"""The three SMMF roles, assembled: controller, worker, API server, and all of them in one process.

Every role serves the same FastAPI app shape; the all-in-one server runs the controller, its
workers and the router in one process through the same calls the separate processes make.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI

from datapilot import __version__
from datapilot.core.config import ModelConfig, Settings
from datapilot.models.cluster.agent import WorkerAgent
from datapilot.models.cluster.client import HttpControllerClient, LocalControllerClient
from datapilot.models.cluster.controller import Controller, controller_router
from datapilot.models.cluster.host import DefinitionStore, ModelHost
from datapilot.models.cluster.registry import Registry, SQLiteRegistryStore
from datapilot.models.cluster.router import RoutingClient
from datapilot.models.manager import ModelManager
from datapilot.server.app import create_app
from datapilot.server.deps import ClusterAuth, cluster_token
from datapilot.server.errors import install_error_handlers
from datapilot.server.models_api import models_router

if TYPE_CHECKING:
    from datapilot.models.cluster.ray_host import RayModels

log = logging.getLogger("datapilot.server")


def definition_store(settings: Settings) -> DefinitionStore:
    return DefinitionStore(settings.home / "models.db")


def all_models(settings: Settings, store: DefinitionStore) -> list[ModelConfig]:
    """Configured models, then those defined through the API (which persist across restarts)."""
    configured = {m.name for m in settings.models}
    return [*settings.models, *(m for m in store.load() if m.name not in configured)]


def local_managers(settings: Settings, store: DefinitionStore) -> dict[str, ModelManager]:
    """One in-process worker per instance index: worker ``local-i`` hosts models with ``instances > i``."""
    enabled = [m for m in all_models(settings, store) if m.enabled]
    count = max((m.instances for m in enabled), default=1)
    return {f"local-{i}": ModelManager([m for m in enabled if m.instances > i], settings.home) for i in range(count)}


def all_in_one_app(settings: Settings, managers: dict[str, ModelManager], store: DefinitionStore) -> FastAPI:
    cluster = settings.cluster
    controller = Controller(Registry(cluster.heartbeat_timeout_s))

    def new_agent(wid: str, manager: ModelManager) -> WorkerAgent:
        return WorkerAgent(manager, LocalControllerClient(controller), wid, None, cluster.heartbeat_interval_s)

    agents = {wid: new_agent(wid, m) for wid, m in managers.items()}
    router = RoutingClient(LocalControllerClient(controller), local_workers=managers, api_key=_key(settings))
    host = ModelHost(settings.models, managers, agents, store, settings.home, new_agent)
    # External workers may join this server too: it answers the controller API.
    return create_app(
        settings,
        router,
        routers=[controller_router(controller, [Depends(ClusterAuth(settings))]), models_router(host)],
        lifecycle=[controller, _Closing(managers, store), *agents.values()],
    )


def standalone_app(settings: Settings) -> FastAPI:
    """The all-in-one app of ``settings``: its models (configured and defined through the API) in this
    process, each loaded when first asked for (``datapilot start`` loads them before serving)."""
    store = definition_store(settings)
    return all_in_one_app(settings, local_managers(settings, store), store)


def ray_app(settings: Settings, store: DefinitionStore) -> FastAPI:
    """The API server of the Ray runtime: every model instance a Ray actor, placed by Ray."""
    from datapilot.models.cluster.ray_host import RayModels

    controller = Controller(Registry(settings.cluster.heartbeat_timeout_s))
    models = RayModels(settings.ray, controller, settings.models, store, settings.home)
    router = RoutingClient(LocalControllerClient(controller), local_workers=models.instances, api_key=_key(settings))
    return create_app(
        settings,
        router,
        routers=[controller_router(controller, [Depends(ClusterAuth(settings))]), models_router(models)],
        lifecycle=[controller, _RayLifecycle(models)],
    )


def worker_app(
    settings: Settings,
    manager: ModelManager,
    advertise_url: str,
    store: DefinitionStore,
    worker_id: str | None = None,
) -> FastAPI:
    cluster = settings.cluster
    wid = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
    agent = WorkerAgent(
        manager,
        HttpControllerClient(cluster.controller_url, token=cluster_token(settings)),
        wid,
        advertise_url,
        cluster.heartbeat_interval_s,
    )
    host = ModelHost(settings.models, {wid: manager}, {wid: agent}, store, settings.home)
    return create_app(
        settings, manager, routers=[models_router(host)], lifecycle=[_AgentLifecycle(agent)], limits=False
    )


def apiserver_app(settings: Settings) -> FastAPI:
    controller = HttpControllerClient(settings.cluster.controller_url, token=cluster_token(settings))
    router = RoutingClient(controller, api_key=_key(settings))
    return create_app(settings, router)


def controller_app(settings: Settings, persist: bool = True) -> FastAPI:
    cluster = settings.cluster
    store = None
    if persist:
        path = Path(cluster.registry_path).expanduser() if cluster.registry_path else settings.home / "controller.db"
        store = SQLiteRegistryStore(path)
    controller = Controller(Registry(cluster.heartbeat_timeout_s, store))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await controller.start()
        try:
            yield
        finally:
            await controller.close()
            if store is not None:
                store.close()

    app = FastAPI(title="DataPilot controller", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(controller_router(controller, [Depends(ClusterAuth(settings))]))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "role": "controller", "version": controller.registry.version}

    return app


def _key(settings: Settings) -> str | None:
    keys = settings.server.api_keys
    return keys[0].get_secret_value() if keys else None


class _AgentLifecycle:
    """Register after the worker's models are loaded; deregister before they are unloaded."""

    def __init__(self, agent: WorkerAgent) -> None:
        self.agent = agent

    async def start(self) -> None:
        if not self.agent.manager.started:
            await self.agent.manager.start()
        await self.agent.start()

    async def close(self) -> None:
        await self.agent.close()
        await self.agent.controller.aclose()


class _RayLifecycle:
    """Places the model actors at start-up and waits until each has loaded or failed; kills them at exit."""

    def __init__(self, models: RayModels) -> None:
        self.models = models

    async def start(self) -> None:
        await self.models.launch()
        waiting = await self.models.wait_loaded(self.models.settings.startup_wait_s)
        for inst in self.models.instances.values():
            info = inst.info()
            error = f" ({info.error})" if info.error else ""
            log.info("%s: %s on %s%s", info.instance_id, info.state, info.node, error)
        if waiting:
            log.warning(
                "%d instance(s) not placed or loaded after %.0fs (%s): serving without them until they are ready; "
                "`ray status` shows whether the cluster has the resources they ask for",
                len(waiting),
                self.models.settings.startup_wait_s,
                ", ".join(i.worker_id for i in waiting),
            )

    async def close(self) -> None:
        await self.models.close()


class _Closing:
    """Unloads in-process workers' models at shutdown (they were loaded before the app started)."""

    def __init__(self, managers: dict[str, ModelManager], store: DefinitionStore | None = None) -> None:
        self.managers = managers
        self.store = store

    async def start(self) -> None:
        for m in self.managers.values():
            if not m.started:
                await m.start()

    async def close(self) -> None:
        for m in self.managers.values():
            await m.close()
        if self.store is not None:
            self.store.close()
