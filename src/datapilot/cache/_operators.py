"""The semantic cache as AWEL operators around any model operator: ``cache_lookup`` -> (hit: the
answer | miss: the model -> ``cache_store``).

The cache a flow names is found in its resources (``FlowResources.caches``: the server puts its
cache-aware client there as ``default``), so a flow's cached call is the same semantic cache, with
the same scopes, thresholds and verification, as every other model call of the server.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from datapilot.awel import BaseOperator, CallContext, Requirement, Routed, register_operator
from datapilot.core.errors import ConfigError
from datapilot.core.types import ModelOutput, ModelRequest

DEFAULT_CACHE = "default"
_STATE = "cache.request:"


@runtime_checkable
class FlowCache(Protocol):
    """What the operators call: ``CachedLLMClient`` has both."""

    async def lookup(self, request: ModelRequest) -> ModelOutput | None: ...

    async def store(self, request: ModelRequest, output: ModelOutput) -> None: ...


def _cache(ctx: CallContext, name: str, node: str) -> FlowCache:
    store = getattr(ctx.resources, "store", None)
    found = store("cache", name, node) if callable(store) else None
    if not isinstance(found, FlowCache):
        raise ConfigError(f"node {node!r}: no semantic cache named {name!r} in this flow's resources")
    return found


@register_operator("cache_lookup")
class CacheLookupOperator(BaseOperator):
    """Looks a request up in a named cache: a hit routes the cached ``ModelOutput`` to ``hit``, a miss
    routes the request to ``miss`` (the model call); ``cache_store`` then stores the answer."""

    routes = True

    def __init__(
        self, hit: str, miss: str, cache: str = DEFAULT_CACHE, *, instance: FlowCache | None = None, **kw: Any
    ) -> None:
        self.hit, self.miss, self.cache, self.instance = hit, miss, cache, instance
        super().__init__(**kw)

    node_name = "cache_lookup"
    accepts = (ModelRequest,)
    produces = ModelRequest | ModelOutput

    def requirements(self) -> list[Requirement]:
        return [] if self.instance else [Requirement(self.name, "cache", self.cache)]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request: ModelRequest = inputs[0]
        cache = self.instance or _cache(ctx, self.cache, self.name)
        found = await cache.lookup(request)
        if found is not None:
            return Routed(found, frozenset((self.hit,)))
        ctx.state[_STATE + self.cache] = request
        return Routed(request, frozenset((self.miss,)))

    def check_structure(self) -> list[str]:
        names = {d.name for d in self.downstream}
        return [
            f"cache lookup {self.describe()} routes {role} to {target!r}, which is not downstream of it"
            for role, target in (("hits", self.hit), ("misses", self.miss))
            if target not in names
        ]

    def params(self) -> dict[str, Any]:
        return {"hit": self.hit, "miss": self.miss, "cache": self.cache}


@register_operator("cache_store")
class CacheStoreOperator(BaseOperator):
    """Stores a model's answer under the request its ``cache_lookup`` missed; passes the answer on."""

    def __init__(self, cache: str = DEFAULT_CACHE, *, instance: FlowCache | None = None, **kw: Any) -> None:
        self.cache, self.instance = cache, instance
        super().__init__(**kw)

    node_name = "cache_store"
    accepts = (ModelOutput,)
    produces = ModelOutput

    def requirements(self) -> list[Requirement]:
        return [] if self.instance else [Requirement(self.name, "cache", self.cache)]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request = ctx.state.get(_STATE + self.cache)
        if request is not None:
            cache = self.instance or _cache(ctx, self.cache, self.name)
            await cache.store(request, inputs[0])
        return inputs[0]

    def params(self) -> dict[str, Any]:
        return {"cache": self.cache}
