"""Model lifecycle over REST: ``/api/models`` (list, define, start, stop, restart, remove)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from datapilot.core.config import ModelConfig
from datapilot.models.cluster.host import ModelLifecycle
from datapilot.server.deps import require_api_key


def models_router(host: ModelLifecycle) -> APIRouter:
    router = APIRouter(prefix="/api/models", tags=["models"], dependencies=[Depends(require_api_key)])

    @router.get("")
    async def list_models() -> dict[str, Any]:
        return {"models": host.describe()}

    @router.post("", status_code=201)
    async def define(config: ModelConfig) -> JSONResponse:
        await host.define(config)
        return JSONResponse({"defined": config.name}, status_code=201)

    @router.delete("/{name}")
    async def undefine(name: str) -> dict[str, Any]:
        await host.undefine(name)
        return {"removed": name}

    @router.post("/{name}/start")
    async def start(name: str) -> dict[str, Any]:
        worker = await host.start(name)
        state, error = host.state_of(worker, name)
        return {"model": name, "worker": worker, "state": state, "error": error}

    @router.post("/{name}/stop")
    async def stop(name: str) -> dict[str, Any]:
        return {"model": name, "stopped": await host.stop(name)}

    @router.post("/{name}/restart")
    async def restart(name: str) -> dict[str, Any]:
        return {"model": name, "restarted": await host.restart(name)}

    return router
