"""Model lifecycle over REST: ``/api/models`` (list, define, start, stop, restart, remove).

A definition's ``base_url`` is checked against the outbound policy (``[security]``): a refused host is
a 400 ``url_not_allowed`` and nothing is defined. An ``api_key`` goes in and never comes out (the
store keeps it encrypted; answers name models, never their keys)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from datapilot.core.config import ModelConfig
from datapilot.core.outbound import OutboundPolicy, outbound_policy
from datapilot.models.cluster.host import ModelLifecycle
from datapilot.server.deps import access, require_api_key


def models_router(host: ModelLifecycle) -> APIRouter:
    router = APIRouter(prefix="/api/models", tags=["models"], dependencies=[Depends(require_api_key)])

    @router.get("")
    async def list_models() -> dict[str, Any]:
        return {"models": host.describe()}

    @router.post("", status_code=201, openapi_extra=access("admin"))
    async def define(config: ModelConfig, request: Request) -> JSONResponse:
        if config.base_url:
            policy = _policy(request)
            await asyncio.to_thread(
                policy.check_url, config.base_url, what=f"model {config.name!r}: base_url", param="base_url"
            )
        await host.define(config)
        return JSONResponse({"defined": config.name}, status_code=201)

    @router.delete("/{name}", openapi_extra=access("admin"))
    async def undefine(name: str) -> dict[str, Any]:
        await host.undefine(name)
        return {"removed": name}

    @router.post("/{name}/start", openapi_extra=access("admin"))
    async def start(name: str) -> dict[str, Any]:
        worker = await host.start(name)
        state, error = host.state_of(worker, name)
        return {"model": name, "worker": worker, "state": state, "error": error}

    @router.post("/{name}/stop", openapi_extra=access("admin"))
    async def stop(name: str) -> dict[str, Any]:
        return {"model": name, "stopped": await host.stop(name)}

    @router.post("/{name}/restart", openapi_extra=access("admin"))
    async def restart(name: str) -> dict[str, Any]:
        return {"model": name, "restarted": await host.restart(name)}

    return router


def _policy(request: Request) -> OutboundPolicy:
    """The policy of this server's settings; the process-wide one where the app holds no settings."""
    settings = getattr(getattr(request.app.state, "services", None), "settings", None)
    security = getattr(settings, "security", None)
    return OutboundPolicy.from_settings(security) if security is not None else outbound_policy()
