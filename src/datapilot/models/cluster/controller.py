"""The controller: knows which model instances exist and which are healthy.

Workers call ``register`` / ``heartbeat`` / ``deregister``; API servers keep a routing table that the
controller updates through a long poll (``GET /api/controller/instances?after=V`` answers as soon as
the table's version passes ``V``), so no request ever waits on the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from datapilot.core.aio import stop_task
from datapilot.models.cluster.registry import InstanceInfo, Registry

log = logging.getLogger("datapilot.controller")


class Controller:
    def __init__(self, registry: Registry, check_interval: float | None = None) -> None:
        self.registry = registry
        self.check_interval = check_interval or max(0.2, registry.heartbeat_timeout / 4)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._expiry_loop())

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            gone = self.registry.expire()
            if gone:
                log.warning(
                    "instances silent for over %.1fs, out of routing: %s",
                    self.registry.heartbeat_timeout,
                    ", ".join(gone),
                )
                await self._notify()

    async def register(self, info: InstanceInfo) -> None:
        self.registry.register(info)
        log.info(
            "registered %s (%s) at %s: %s",
            info.instance_id,
            info.model,
            info.url or info.node or "in-process",
            info.state,
        )
        await self._notify()

    async def heartbeat(self, instance_ids: list[str], states: dict[str, tuple[str, str | None]]) -> list[str]:
        before = self.registry.version
        unknown = self.registry.heartbeat(instance_ids, states)
        if self.registry.version != before:
            await self._notify()
        return unknown

    async def deregister(self, instance_ids: list[str]) -> None:
        self.registry.deregister(instance_ids)
        await self._notify()

    async def table(self, after: int | None = None, wait: float = 0.0) -> tuple[int, list[InstanceInfo]]:
        """Live instances; with ``after``, wait up to ``wait`` seconds for a newer version."""
        if after is not None and wait > 0 and self.registry.version <= after:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.registry.version > after), timeout=wait)
        return self.registry.version, self.registry.live()


class RegisterBody(BaseModel):
    instance_id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    worker_id: str = Field(min_length=1)
    url: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    state: str = "ready"
    error: str | None = None


class HeartbeatBody(BaseModel):
    instance_ids: list[str]
    states: dict[str, tuple[str, str | None]] = Field(default_factory=dict)


class DeregisterBody(BaseModel):
    instance_ids: list[str]


def controller_router(controller: Controller, dependencies: Sequence[Any] = ()) -> APIRouter:
    """The controller's API; ``dependencies`` authenticate the callers (the server gives them)."""
    router = APIRouter(prefix="/api/controller", tags=["controller"], dependencies=list(dependencies))

    @router.post("/register")
    async def register(body: RegisterBody) -> dict[str, Any]:
        await controller.register(InstanceInfo(**body.model_dump()))
        return {"ok": True, "version": controller.registry.version}

    @router.post("/heartbeat")
    async def heartbeat(body: HeartbeatBody) -> dict[str, Any]:
        unknown = await controller.heartbeat(body.instance_ids, body.states)
        return {"ok": True, "unknown": unknown}

    @router.post("/deregister")
    async def deregister(body: DeregisterBody) -> dict[str, Any]:
        await controller.deregister(body.instance_ids)
        return {"ok": True}

    @router.get("/instances")
    async def instances(request: Request, after: int | None = None, wait: float = 0.0) -> dict[str, Any]:
        version, live = await controller.table(after, min(wait, 30.0))
        return {"version": version, "instances": [i.to_dict() for i in live]}

    @router.get("/registry")
    async def registry() -> dict[str, Any]:
        """Everything registered, live or not (for operators and `datapilot model list`)."""
        return {
            "version": controller.registry.version,
            "heartbeat_timeout": controller.registry.heartbeat_timeout,
            "instances": [{**i.to_dict(), "live": live} for i, live in controller.registry.all()],
        }

    return router
