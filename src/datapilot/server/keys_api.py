"""Tenants' API keys and budgets over REST (admin keys only), and ``GET /api/whoami`` (any key).

- ``GET /api/keys`` (``?tenant=``, ``?include_revoked=true``), ``POST /api/keys`` (answers the new key
  once, in ``key``), ``GET /api/keys/{id}``, ``DELETE /api/keys/{id}`` (revoke);
- ``GET /api/tenants`` (each tenant with its budgets), ``PUT /api/tenants/{tenant}/budget``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from datapilot.core.keys import KeyStore
from datapilot.core.tenancy import Level, current_principal
from datapilot.server.deps import UnavailableError, access, key_store, require_api_key


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=200)
    level: Level = "write"
    scopes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="names per kind (models, datasources, spaces, flows, cache); a kind left out: all",
    )
    rpm: StrictInt | None = Field(None, ge=1, description="requests per minute on model-calling routes")
    tpm: StrictInt | None = Field(None, ge=1, description="model tokens per minute")
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily_tokens: StrictInt | None = Field(None, ge=0)
    monthly_tokens: StrictInt | None = Field(None, ge=0)


def _store(request: Request) -> KeyStore:
    store = key_store(request)
    if store is None:
        raise UnavailableError("API keys are not available on this server")
    return store


def build_keys_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])
    admin = access("admin")

    @router.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return current_principal().to_dict()

    @router.get("/keys", openapi_extra=admin)
    async def list_keys(request: Request, tenant: str | None = None, include_revoked: bool = False) -> dict[str, Any]:
        keys = await asyncio.to_thread(_store(request).keys, tenant, include_revoked=include_revoked)
        return {"keys": [k.to_dict() for k in keys]}

    @router.post("/keys", status_code=201, openapi_extra=admin)
    async def create_key(body: NewKey, request: Request) -> JSONResponse:
        record, key = await asyncio.to_thread(
            _store(request).create,
            body.tenant,
            name=body.name,
            level=body.level,
            scopes=body.scopes,
            rpm=body.rpm,
            tpm=body.tpm,
            expires_in_s=body.expires_in_s,
        )
        return JSONResponse({**record.to_dict(), "key": key}, status_code=201)

    @router.get("/keys/{key_id}", openapi_extra=admin)
    async def get_key(key_id: str, request: Request) -> dict[str, Any]:
        return (await asyncio.to_thread(_store(request).get, key_id)).to_dict()

    @router.delete("/keys/{key_id}", openapi_extra=admin)
    async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
        return (await asyncio.to_thread(_store(request).revoke, key_id)).to_dict()

    @router.get("/tenants", openapi_extra=admin)
    async def tenants(request: Request) -> dict[str, Any]:
        store = _store(request)
        names = await asyncio.to_thread(store.tenants)
        return {"tenants": [(await asyncio.to_thread(store.budget, n)).to_dict() for n in names]}

    @router.put("/tenants/{tenant}/budget", openapi_extra=admin)
    async def set_budget(tenant: str, body: Budget, request: Request) -> dict[str, Any]:
        budget = await asyncio.to_thread(
            _store(request).set_budget, tenant, daily_tokens=body.daily_tokens, monthly_tokens=body.monthly_tokens
        )
        return budget.to_dict()

    return router
