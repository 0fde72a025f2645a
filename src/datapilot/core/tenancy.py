"""Who is asking: the current request's principal (tenant, key, access level, scopes), and the checks
every layer makes with it.

The server's authentication (``datapilot.server.deps``) resolves the request's API key to a
``Principal`` and sets it for the request with ``acting_as``; code below it, in any layer, asks
``current_principal()``:

- ``owner_filter()``/``can_see(owner)``/``require_visible(...)``: a tenant sees only the resources it
  owns (data sources, knowledge spaces, flows, scenes, agent runs, conversations, cache scopes); an
  admin sees every tenant's. A resource another tenant owns is answered as missing (404), never as
  forbidden, so its name does not leak.
- ``require_scope(kind, name)``: a key may be limited to some models, data sources, knowledge spaces,
  flows or cache scopes (403 outside them).
- ``require_level(level)``: ``read`` keys use things (chat, queries) and read their tenant's
  resources; ``write`` keys also create, change and delete them; ``admin`` keys manage the server
  (keys, models, the controller, the audit log) and every tenant.

Outside a request (the CLI, a library user, a server without keys) the principal is ``LOCAL``: the
``default`` tenant with admin rights, so nothing changes for a single-user install.

Standard library only: every layer may import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from datapilot.core.errors import NotFoundError, PermissionDeniedError

Level = Literal["read", "write", "admin"]
LEVELS: tuple[Level, ...] = ("read", "write", "admin")
DEFAULT_TENANT = "default"
# What a key's scopes may name; each kind is a list of names ("*" or absent: all).
SCOPE_KINDS = ("models", "datasources", "spaces", "flows", "cache")


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: its tenant, access level, the key it showed (``key_id``, never the key) and the
    resources its key is limited to (``scopes[kind]``: names; a kind not listed is unrestricted)."""

    tenant: str = DEFAULT_TENANT
    level: Level = "admin"
    key_id: str | None = None
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rpm: int | None = None  # requests per minute on model-calling routes; None: unlimited
    tpm: int | None = None  # model tokens per minute

    @property
    def is_admin(self) -> bool:
        return self.level == "admin"

    def at_least(self, level: Level) -> bool:
        return LEVELS.index(self.level) >= LEVELS.index(level)

    def allows(self, kind: str, name: str) -> bool:
        """Whether the key's scopes include ``name`` of ``kind`` (``models``, ``datasources`` ...)."""
        names = self.scopes.get(kind)
        return names is None or "*" in names or name in names

    def to_dict(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "level": self.level,
            "key_id": self.key_id,
            "scopes": {k: list(v) for k, v in self.scopes.items()},
            "rpm": self.rpm,
            "tpm": self.tpm,
        }


LOCAL = Principal()
_current: ContextVar[Principal] = ContextVar("datapilot_principal", default=LOCAL)


def current_principal() -> Principal:
    return _current.get()


def current_tenant() -> str:
    return _current.get().tenant


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    """Run the block (and the tasks it starts, which copy the context) as ``principal``."""
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)


_internal: ContextVar[bool] = ContextVar("datapilot_internal_call", default=False)


@contextmanager
def internal_call() -> Iterator[None]:
    """Model calls DataPilot makes on its own behalf inside a request (the semantic cache's or the
    knowledge base's embedder, a ``datapilot`` embedder): the key's model scopes name the models the
    caller may ask for, not these, so they do not apply (the tenant is still charged the tokens)."""
    token = _internal.set(True)
    try:
        yield
    finally:
        _internal.reset(token)


def in_internal_call() -> bool:
    return _internal.get()


def set_principal(principal: Principal) -> None:
    """Set the principal for the rest of the current context (a request's dependency: the route, its
    streamed answer and the tasks it starts run in copies of that context)."""
    _current.set(principal)


def owner_of_new() -> str:
    """The tenant that owns a resource created now."""
    return _current.get().tenant


def owner_filter() -> str | None:
    """The tenant whose resources a listing shows; ``None``: all of them (an admin)."""
    principal = _current.get()
    return None if principal.is_admin else principal.tenant


def can_see(owner: str | None) -> bool:
    """Whether the current principal may see a resource owned by ``owner`` (``None``: made before
    tenants existed, so the default tenant's)."""
    principal = _current.get()
    return principal.is_admin or (owner or DEFAULT_TENANT) == principal.tenant


def require_visible(owner: str | None, what: str, name: str) -> None:
    """Raise the same 404 as for a missing resource unless the current principal may see it."""
    if not can_see(owner):
        raise NotFoundError(f"unknown {what} {name!r}")


def require_scope(kind: str, name: str) -> None:
    """403 unless the current key's scopes include ``name`` of ``kind``."""
    principal = _current.get()
    if not principal.allows(kind, name):
        singular = {"models": "model", "datasources": "data source", "spaces": "knowledge space"}.get(
            kind, kind.rstrip("s")
        )
        raise PermissionDeniedError(
            f"this API key may not use the {singular} {name!r}; ask an admin for a key whose scopes include it",
            param=kind,
        )


def require_level(level: Level, what: str = "this") -> None:
    """403 unless the current key's level is at least ``level``."""
    principal = _current.get()
    if not principal.at_least(level):
        raise PermissionDeniedError(
            f"{what} needs a key with {level} access; this key has {principal.level} access",
            code="insufficient_access",
        )


def cache_tenant(requested: str | None) -> str | None:
    """The cache tenant a request acts in: its own tenant for a tenant's key (asking for another is a
    403); what the request names, for an admin. The default tenant's entries keep ``None`` (as before
    tenants existed)."""
    principal = _current.get()
    if principal.is_admin:
        return requested
    own = None if principal.tenant == DEFAULT_TENANT else principal.tenant
    if requested is not None and requested != own:
        raise PermissionDeniedError(
            f"this API key belongs to the tenant {principal.tenant!r} and may not use the cache of {requested!r}",
            param="tenant",
        )
    return own
