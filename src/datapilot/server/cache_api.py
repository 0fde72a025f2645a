"""The cache over HTTP: ModelCache's ``POST /modelcache``, the clean ``/api/cache/...`` API, and the
hooks ``/v1`` uses to put the cache in front of the models.

``/modelcache`` answers exactly as ModelCache's Flask service does (HTTP 200, ``errorCode`` in the
body) and accepts both a JSON object and the double-encoded JSON string that ModelCache's README
clients send (``requests.post(url, json=json.dumps(data))``), so their clients work unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from datapilot import __version__
from datapilot.apps.services import BYPASS_HEADER, TENANT_HEADER, CacheHeaders, CacheService, serving
from datapilot.cache import Scope, SemanticCache
from datapilot.core.audit import audit_note
from datapilot.core.client import LLMClient
from datapilot.core.config import Settings
from datapilot.core.errors import AuthenticationError, DataPilotError, InvalidRequestError, PermissionDeniedError
from datapilot.core.tenancy import cache_tenant, current_principal, require_level, require_scope, set_principal
from datapilot.core.types import ModelRequest
from datapilot.server.deps import access, authenticate, cache_service, require_api_key

log = logging.getLogger("datapilot.server")


# --- serving integration (used by /v1) ----------------------------------------------------------------


def serving_client(
    request: Request, llm: LLMClient, mreq: ModelRequest, use_cache: bool | None
) -> tuple[LLMClient, CacheHeaders]:
    """The client that answers ``mreq``, and a function giving the cache headers for the response:
    the request's ``x-datapilot-cache: bypass`` and ``x-datapilot-cache-tenant`` headers applied. A
    tenant's key is answered from (and fills) its own tenant's scope, header or not; naming another
    tenant is a 403."""
    svc = getattr(request.app.state, "services", None)
    return serving(
        getattr(svc, "cache", None),
        llm,
        mreq.request_id,
        use_cache=use_cache,
        bypass=request.headers.get(BYPASS_HEADER, ""),
        tenant=cache_tenant(request.headers.get(TENANT_HEADER) or None),
    )


# --- ModelCache-compatible API -------------------------------------------------------------------------


def _delta(started: float) -> str:
    return f"{round(time.perf_counter() - started, 2)}s"


def _query_error(code: int, desc: str) -> dict[str, Any]:
    return {"errorCode": code, "errorDesc": desc, "cacheHit": False, "delta_time": 0, "hit_query": "", "answer": ""}


async def _parse_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data: Any = json.loads(raw)
    if isinstance(data, str):  # ModelCache's clients post json=json.dumps(data): a JSON string of JSON
        data = json.loads(data)
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object (or a JSON string holding one)")
    return data


def build_modelcache_router() -> APIRouter:
    router = APIRouter()

    @router.post("/modelcache", response_model=None)
    async def modelcache(request: Request) -> JSONResponse:
        try:  # the server's API keys, answered in ModelCache's own shape
            principal = authenticate(request)
        except AuthenticationError as exc:
            return JSONResponse(_query_error(401, exc.message), status_code=401)
        set_principal(principal)
        audit_note(tenant=None if principal.is_admin else principal.tenant, key_id=principal.key_id)
        try:
            data = await _parse_body(request)
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse(_query_error(101, f"invalid request body: {exc}"))
        kind = data.get("type")
        if kind not in ("query", "insert", "remove", "register"):
            return JSONResponse(
                _query_error(102, "type exception, should one of ['query', 'insert', 'remove', 'register']")
            )
        try:
            scope = Scope.parse(data.get("scope"))
        except DataPilotError as exc:
            return JSONResponse(_query_error(103, exc.message))
        try:  # a tenant's key acts in its own tenant's scope; insert, remove and register change it
            scope = Scope(scope.model, cache_tenant(scope.tenant))
            require_scope("cache", scope.model)
            if kind != "query":
                require_level("write", f"the ModelCache {kind!r} request")
        except PermissionDeniedError as exc:
            return JSONResponse(_query_error(403, exc.message), status_code=403)
        # An admin acting in a tenant's scope: the record names that tenant (a tenant key's is noted already).
        audit_note(cache_scope=scope.model, tenant=scope.tenant if principal.is_admin else None)
        cache = cache_service(request).cache
        handler = {"query": _mc_query, "insert": _mc_insert, "remove": _mc_remove, "register": _mc_register}[kind]
        return JSONResponse(await handler(cache, scope, data))

    return router


async def _mc_query(cache: SemanticCache, scope: Scope, data: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await cache.query(scope, data.get("query"))
    except InvalidRequestError as exc:
        return {**_query_error(201, f"adapt_query_exception: {exc.message}"), "delta_time": _delta(started)}
    except Exception as exc:
        log.exception("cache query failed")
        return _query_error(202, f"{type(exc).__name__}: {exc}")
    return {
        "errorCode": 0,
        "errorDesc": "",
        "cacheHit": result.hit,
        "delta_time": _delta(started),
        "hit_query": result.hit_query or "",
        "answer": result.answer or "",
        "similarity": result.similarity,
        "id": result.id,
    }


async def _mc_insert(cache: SemanticCache, scope: Scope, data: dict[str, Any]) -> dict[str, Any]:
    chat_info = data.get("chat_info")
    try:
        if not isinstance(chat_info, list) or not chat_info:
            raise InvalidRequestError("chat_info must be a non-empty list of {query, answer} objects")
        items = []
        for i, item in enumerate(chat_info):
            if not isinstance(item, dict) or "query" not in item or "answer" not in item:
                raise InvalidRequestError(f"chat_info[{i}] must be an object with 'query' and 'answer'")
            items.append((item["query"], item["answer"]))
        ids = await cache.insert_many(scope, items)
    except InvalidRequestError as exc:
        return {"errorCode": 301, "errorDesc": f"adapt_insert_exception: {exc.message}", "writeStatus": "exception"}
    except Exception as exc:
        log.exception("cache insert failed")
        return {"errorCode": 302, "errorDesc": f"{type(exc).__name__}: {exc}", "writeStatus": "exception"}
    return {"errorCode": 0, "errorDesc": "", "writeStatus": "success", "id_list": ids}


async def _mc_remove(cache: SemanticCache, scope: Scope, data: dict[str, Any]) -> dict[str, Any]:
    remove_type = data.get("remove_type")
    try:
        if remove_type == "delete_by_id":
            n = await cache.remove(scope, data.get("id_list", []))
        elif remove_type == "truncate_by_model":
            n = await cache.truncate(scope)
        else:
            return {
                "errorCode": 401,
                "errorDesc": "remove_type must be 'delete_by_id' or 'truncate_by_model'",
                "response": {"status": "exception"},
                "removeStatus": "exception",
            }
    except InvalidRequestError as exc:
        return {
            "errorCode": 401,
            "errorDesc": exc.message,
            "response": {"status": "exception"},
            "removeStatus": "exception",
        }
    except Exception as exc:
        log.exception("cache remove failed")
        return {
            "errorCode": 402,
            "errorDesc": f"{type(exc).__name__}: {exc}",
            "response": {"status": "exception"},
            "writeStatus": "exception",
        }
    return {"errorCode": 0, "errorDesc": "", "response": {"status": "success", "removed": n}, "writeStatus": "success"}


async def _mc_register(cache: SemanticCache, scope: Scope, data: dict[str, Any]) -> dict[str, Any]:
    try:
        new = await cache.register(scope)
    except Exception as exc:
        log.exception("cache register failed")
        return {
            "errorCode": 502,
            "errorDesc": f"{type(exc).__name__}: {exc}",
            "response": "create_failed",
            "writeStatus": "exception",
        }
    return {
        "errorCode": 0,
        "errorDesc": "",
        "response": "create_success" if new else "already_exists",
        "writeStatus": "success",
    }


# --- the clean REST API --------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScopeIn(_In):
    model: str = Field(min_length=1)
    tenant: str | None = None

    def scope(self) -> Scope:
        return acting_scope(self.model, self.tenant)


class MessageIn(_In):
    role: str
    content: str


class QueryIn(_In):
    scope: ScopeIn
    messages: list[MessageIn] | None = None
    prompt: str | None = None


class EntryIn(_In):
    messages: list[MessageIn] | None = None
    prompt: str | None = None
    answer: str


class InsertIn(_In):
    scope: ScopeIn
    entries: list[EntryIn] = Field(min_length=1)


class RemoveIn(_In):
    scope: ScopeIn
    ids: list[int]


class TruncateIn(_In):
    scope: ScopeIn


class SettingsIn(_In):
    scope: ScopeIn
    settings: dict[str, Any]


class FeedbackIn(_In):
    """A mark on one hit: entry ``id`` answered the probe (``messages`` or ``prompt``) rightly or not."""

    model: str = Field(min_length=1)
    tenant: str | None = None
    id: StrictInt
    messages: list[MessageIn] | None = None
    prompt: str | None = None
    right: StrictBool
    similarity: float | None = Field(None, ge=-1.001, le=1.001)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def acting_scope(model: str, tenant: str | None) -> Scope:
    """The scope a request acts in: the caller's own tenant's (an admin: the one it names), within the
    key's cache scopes (403 otherwise), as ``/modelcache`` maps ModelCache's ``scope``."""
    scope = Scope(model, cache_tenant(tenant))
    require_scope("cache", scope.model)
    audit_note(cache_scope=scope.model)
    return scope


def _visible(tenant: str | None = None, *, only: bool = False) -> Callable[[Scope], bool]:
    """Which scopes a listing shows the caller: its own tenant's (an admin: every tenant's, or with
    ``only`` the ``tenant`` it names), within the key's cache scopes. Decided here, in the request:
    the cache filters in its worker threads, which do not see the request's principal."""
    principal, own = current_principal(), cache_tenant(tenant)
    every = principal.is_admin and not only

    def visible(scope: Scope) -> bool:
        return principal.allows("cache", scope.model) and (every or scope.tenant == own)

    return visible


def _messages(messages: list[MessageIn] | None, prompt: str | None, param: str) -> tuple[Any, str | None]:
    if (messages is None) == (prompt is None):
        raise InvalidRequestError("give exactly one of messages or prompt", param=param)
    return ([m.model_dump() for m in messages] if messages is not None else None), prompt


class Page:
    """A page of one scope's rows: ``model`` (and ``tenant``), ``limit`` and ``offset`` query parameters."""

    def __init__(
        self,
        model: str = Query(min_length=1),
        tenant: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> None:
        self.model, self.tenant, self.limit, self.offset = model, tenant, limit, offset

    @property
    def scope(self) -> Scope:
        return acting_scope(self.model, self.tenant)


def build_cache_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    def _cache(request: Request) -> SemanticCache:
        return cache_service(request).cache

    @router.post("/query", openapi_extra=access("use"))
    async def query(body: QueryIn, cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        scope = body.scope.scope()
        messages, prompt = _messages(body.messages, body.prompt, "messages")
        return (await cache.query(scope, messages, prompt=prompt)).to_dict()

    @router.post("/insert")
    async def insert(body: InsertIn, cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        scope = body.scope.scope()
        pairs = [_messages(e.messages, e.prompt, f"entries.{i}") for i, e in enumerate(body.entries)]
        if all(p is not None for _, p in pairs):
            ids = await cache.insert_many(
                scope,
                [(p, e.answer) for (_, p), e in zip(pairs, body.entries, strict=True)],
                prompts=True,
            )
        elif all(m is not None for m, _ in pairs):
            ids = await cache.insert_many(scope, [(m, e.answer) for (m, _), e in zip(pairs, body.entries, strict=True)])
        else:
            raise InvalidRequestError("entries of one request are either all messages or all prompts")
        return {"ids": ids}

    @router.post("/remove")
    async def remove(body: RemoveIn, cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        return {"removed": await cache.remove(body.scope.scope(), body.ids)}

    @router.post("/truncate")
    async def truncate(body: TruncateIn, cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        return {"removed": await cache.truncate(body.scope.scope())}

    @router.get("/stats")
    async def stats(
        model: str = Query(min_length=1), tenant: str | None = None, cache: SemanticCache = Depends(_cache)
    ) -> dict[str, Any]:
        return (await cache.stats(acting_scope(model, tenant))).to_dict()

    @router.get("/log")
    async def query_log(
        model: str | None = None,
        tenant: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        cache: SemanticCache = Depends(_cache),
    ) -> dict[str, Any]:
        if model:
            rows = await cache.query_log(acting_scope(model, tenant), limit)
        else:  # every model's rows: of the tenant named (a tenant's key: its own only), else the caller's
            rows = await cache.query_log(None, limit, where=_visible(tenant, only=tenant is not None))
        return {"data": [r.to_dict() for r in rows]}

    @router.get("/entries")
    async def entries(page: Page = Depends(), cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        return {"data": [e.to_dict() for e in await cache.entries(page.scope, page.limit, page.offset)]}

    @router.post("/feedback")
    async def feedback(body: FeedbackIn, cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        messages, prompt = _messages(body.messages, body.prompt, "messages")
        record = await cache.feedback(
            acting_scope(body.model, body.tenant),
            body.id,
            messages,
            body.right,
            prompt=prompt,
            similarity=body.similarity,
        )
        return record.to_dict()

    @router.get("/feedback")
    async def feedback_log(page: Page = Depends(), cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        return {
            "data": [r.to_dict() for r in await cache.feedback_log(page.scope, page.limit, page.offset)],
            "learned_rules": await cache.learned_rules(page.scope),
        }

    @router.get("/feedback/export")
    async def feedback_export(
        model: str = Query(min_length=1), tenant: str | None = None, cache: SemanticCache = Depends(_cache)
    ) -> Response:
        scope = acting_scope(model, tenant)
        pairs = await cache.feedback_pairs(scope)
        lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
        name = _SAFE_NAME.sub("_", f"{model}-{scope.tenant}" if scope.tenant else model)
        return Response(
            lines,
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="cache-feedback-{name}.jsonl"'},
        )

    @router.get("/scopes")
    async def scopes(cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        """The caller's tenant's scopes (an admin: every tenant's)."""
        visible = _visible()
        return {"data": [s.to_dict() for s in await cache.scopes() if visible(s)]}

    @router.get("/settings")
    async def get_settings(
        model: str = Query(min_length=1), tenant: str | None = None, cache: SemanticCache = Depends(_cache)
    ) -> dict[str, Any]:
        scope = acting_scope(model, tenant)
        await cache.open()
        return cache.policy(scope).model_dump()

    @router.put("/settings")
    async def put_settings(body: SettingsIn, cache: SemanticCache = Depends(_cache)) -> dict[str, Any]:
        scope = body.scope.scope()
        await cache.open()
        return (await cache.set_policy(scope, body.settings)).model_dump()

    return router


def include_cache_routes(app: FastAPI) -> None:
    app.include_router(build_modelcache_router(), tags=["cache"])
    app.include_router(build_cache_router(), prefix="/api/cache", tags=["cache"])


def create_cache_app(settings: Settings) -> FastAPI:
    """The cache alone (``datapilot cache serve``): /modelcache, /api/cache, /health."""
    from datapilot.server.audit import AuditLog, AuditMiddleware
    from datapilot.server.errors import install_error_handlers

    service = CacheService.from_settings(settings)
    audit = AuditLog.from_settings(settings.audit, settings.home) if settings.audit.enabled else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if audit is not None:
            await audit.start()
        await service.cache.open()
        try:
            yield
        finally:
            await service.aclose()
            if audit is not None:
                await audit.close()

    app = FastAPI(title="DataPilot cache", version=__version__, lifespan=lifespan)
    app.state.cache = service
    app.state.settings = settings  # its API keys guard /modelcache and /api/cache
    app.state.audit = audit
    install_error_handlers(app)
    include_cache_routes(app)
    if audit is not None:  # the same audit log as the full server's, in the same home
        app.add_middleware(AuditMiddleware, audit=audit, keys=lambda: settings.server.api_keys)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "service": "cache"}

    return app
