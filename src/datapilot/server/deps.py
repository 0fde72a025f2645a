"""What routes take from the running server: its service objects (from app state), the API key check,
and cancellation when the client goes away.

Each typed getter (``data_service``, ``cache_service``, ``knowledge_service``, ``agent_service``,
``scene_service``, ``flow_manager``) answers 404 ``not_available``, "... is not available on this server", when this
server runs without that part (a cache-only server, a role that leaves it out).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import SecretStr

from datapilot.core.audit import audit_note
from datapilot.core.errors import AuthenticationError, NotFoundError
from datapilot.core.keys import KeyStore
from datapilot.core.tenancy import DEFAULT_TENANT, LOCAL, Level, Principal, require_level, set_principal

if TYPE_CHECKING:  # only for types: a cache-only server need not import the other services
    from datapilot.apps import SceneService
    from datapilot.apps.services import AgentService, CacheService, DataService, KnowledgeService
    from datapilot.awel import DAGManager
    from datapilot.core.client import LLMClient
    from datapilot.core.config import Settings
    from datapilot.models.service import ModelService
    from datapilot.server.metrics import ServingMetrics

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's "client closed request": the answer nobody reads


@dataclass(slots=True)
class Services:
    """The service objects a running server holds, injected into routes from ``app.state.services``."""

    settings: Settings
    llm: ModelService
    metrics: ServingMetrics
    awel: DAGManager | None = None
    cache: CacheService | None = None
    data: DataService | None = None
    knowledge: KnowledgeService | None = None
    agents: AgentService | None = None
    scenes: SceneService | None = None  # the chat scenes, each an AWEL flow (POST /api/chat)

    def chat_llm(self) -> LLMClient:
        """The client for app-level model calls (scenes, agents): the cache-aware one when the cache serves."""
        client = self.cache.client if self.cache is not None else None
        return client if client is not None else self.llm


class UnavailableError(NotFoundError):
    """A part of DataPilot this server does not run: its routes answer 404, saying so."""

    default_code = "not_available"


class ClientDisconnected(Exception):
    """The client went away before the answer was ready; the work was cancelled."""


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _part(name: str, what: str) -> Callable[[Request], Any]:
    """The getter of the service ``name`` for routes; a server without it answers 404, saying so."""

    def get(request: Request) -> Any:
        part = getattr(getattr(request.app.state, "services", None), name, None)
        if part is None:
            raise UnavailableError(f"{what} on this server")
        return part

    get.__name__ = get.__qualname__ = f"{name}_service"
    return get


data_service: Callable[[Request], DataService] = _part("data", "data sources are not available")
knowledge_service: Callable[[Request], KnowledgeService] = _part("knowledge", "knowledge is not available")
agent_service: Callable[[Request], AgentService] = _part("agents", "agents are not available")
scene_service: Callable[[Request], SceneService] = _part("scenes", "chat scenes are not available")
flow_manager: Callable[[Request], DAGManager] = _part("awel", "workflows are not enabled")
_shared_cache: Callable[[Request], CacheService] = _part("cache", "the semantic cache is not available")


def cache_service(request: Request) -> CacheService:
    # A cache-only server (``datapilot cache serve``) holds its cache as ``app.state.cache``.
    alone: CacheService | None = getattr(request.app.state, "cache", None)
    return alone if alone is not None else _shared_cache(request)


def bearer_token(request: Request) -> str:
    """The request's ``Authorization: Bearer`` token; 401 ``missing_api_key`` without one."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    return token.strip()


def check_key(request: Request, keys: Sequence[SecretStr]) -> None:
    """Raise ``AuthenticationError`` unless the request carries one of ``keys`` (no keys: open)."""
    if not keys:
        return
    token = bearer_token(request)
    if not any(secrets.compare_digest(token, k.get_secret_value()) for k in keys):
        raise AuthenticationError("Incorrect API key provided.")


def server_settings(request: Request) -> Settings | None:
    svc = getattr(request.app.state, "services", None)
    settings: Settings | None = svc.settings if svc is not None else getattr(request.app.state, "settings", None)
    return settings


def server_keys(request: Request) -> Sequence[SecretStr]:
    """The API keys of this server's configuration (a cache-only server keeps its settings as
    ``app.state.settings``): admin keys of the default tenant."""
    settings = server_settings(request)
    return settings.server.api_keys if settings is not None else ()


def key_store(request: Request) -> KeyStore | None:
    """The tenants' keys (``DATAPILOT_HOME/keys.db``), kept on the app; ``None`` without a home."""
    store: KeyStore | None = getattr(request.app.state, "keys", None)
    if store is None:
        settings = server_settings(request)
        if settings is None:
            return None
        store = request.app.state.keys = KeyStore.for_home(settings.home)
    return store


CONFIG_KEY_ID = "config"  # the key_id of the keys in ``server.api_keys`` (admin keys of the default tenant)


def authenticate(request: Request) -> Principal:
    """Who the request is from: ``LOCAL`` (admin, default tenant) when the server has no keys at all;
    else the principal of the key it shows (401 when it shows none, or one that is unknown or
    revoked). Keys in the configuration are the default tenant's admin keys."""
    configured = server_keys(request)
    store = key_store(request)
    if not configured and (store is None or not store.has_keys()):
        return LOCAL
    token = bearer_token(request)
    if any(secrets.compare_digest(token, k.get_secret_value()) for k in configured):
        return Principal(DEFAULT_TENANT, "admin", CONFIG_KEY_ID)
    record = store.resolve(token) if store is not None else None
    if record is None:
        raise AuthenticationError("Incorrect API key provided (unknown, revoked or expired).")
    return record.principal()


ACCESS_FIELD = "x-datapilot-access"
_ACCESS_LEVEL: dict[str, Level] = {"read": "read", "use": "read", "write": "write", "admin": "admin"}


def access(kind: str) -> dict[str, Any]:
    """A route's ``openapi_extra`` declaring the access it needs: ``read`` (the default for GET),
    ``use`` (calls a model or runs something, with a read key: rate-limited per key), ``write`` (the
    default for other methods: creates, changes or deletes the tenant's resources) or ``admin``."""
    if kind not in _ACCESS_LEVEL:
        raise ValueError(f"unknown access kind {kind!r}")
    return {ACCESS_FIELD: kind}


def route_access(request: Request) -> str:
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    declared = extra.get(ACCESS_FIELD)
    if isinstance(declared, str):
        return declared
    return "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"


RequestGate = Callable[[Principal], None]


async def require_api_key(request: Request) -> Principal:
    """Every API route's dependency: authenticate, check the route's access against the key's level,
    admit a model-calling request under the key's rate limit, and set the principal for the request."""
    principal = authenticate(request)
    set_principal(principal)
    audit_note(tenant=None if principal.is_admin else principal.tenant, key_id=principal.key_id)
    kind = route_access(request)
    require_level(_ACCESS_LEVEL.get(kind, "write"))
    if kind == "use":
        gate: RequestGate | None = getattr(request.app.state, "request_gate", None)
        if gate is not None:
            gate(principal)
    return principal


class ClusterAuth:
    """The controller's routes' dependency: a worker or API server shows the cluster token
    (``cluster.token``) or, without one, an API key; open only when neither is configured."""

    def __init__(self, settings: Settings) -> None:
        token = settings.cluster.token
        self.keys = [token] if token is not None else list(settings.server.api_keys)

    async def __call__(self, request: Request) -> None:
        check_key(request, self.keys)


def cluster_token(settings: Settings) -> str | None:
    """What a worker sends to the controller: the cluster token, else the first API key."""
    if settings.cluster.token is not None:
        return settings.cluster.token.get_secret_value()
    keys = settings.server.api_keys
    return keys[0].get_secret_value() if keys else None


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has disconnected (the request body must already be read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (then raise ``ClientDisconnected``)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request was cancelled itself: the work goes with it
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientDisconnected
