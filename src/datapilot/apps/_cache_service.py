"""The semantic cache a server holds, and the cached view of its models when serving integration is on.

``serving`` decides, for one model request, whether the cache answers it and gives the response
headers that report the decision; the HTTP layer only reads the request headers and passes them in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datapilot.cache import CachedLLMClient, SemanticCache
from datapilot.core.client import EmbeddingClient, LLMClient
from datapilot.core.config import Settings
from datapilot.models.service import served_config
from datapilot.privacy import Policy, policy_for

if TYPE_CHECKING:
    from datapilot.core.retrieval import Embedder

BYPASS_HEADER = "x-datapilot-cache"  # request: "bypass" (or "no-cache"); response: hit | miss | bypass
TENANT_HEADER = "x-datapilot-cache-tenant"
ENTRY_HEADER = "x-datapilot-cache-id"  # response, on a hit: the entry that answered (for feedback)
SIMILARITY_HEADER = "x-datapilot-cache-similarity"
BYPASS_VALUES = frozenset({"bypass", "no-cache", "off", "0", "false"})

CacheHeaders = Callable[[], dict[str, str]]
"""Called once the answer (or its first chunk) is ready: the headers that report the cache's decision."""


@dataclass
class CacheService:
    """The cache a server holds, and the cached view of its models when serving integration is on."""

    cache: SemanticCache
    client: CachedLLMClient | None = None
    started: float = field(default_factory=time.time)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        llm: LLMClient | None = None,
        *,
        embedders: Mapping[str, Embedder] | None = None,
    ) -> CacheService:
        """``embedders``: already built embedders by name (``cache.embedders``), shared with the
        server's other parts; the cache builds any other it needs itself."""
        local: EmbeddingClient | None = llm if isinstance(llm, EmbeddingClient) else None
        cache = SemanticCache(settings.cache, settings.home, embedders=dict(embedders or {}), local_client=local)
        client = (
            CachedLLMClient(llm, cache, settings.cache, privacy=model_privacy(settings, llm))
            if llm is not None and settings.cache.enabled
            else None
        )
        return cls(cache, client)

    async def start(self) -> None:
        if self.client is not None:  # serving integration on: open now, so the first request is fast
            await self.cache.open()

    async def close(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.drain()
        await self.cache.close()


def serving(
    service: CacheService | None,
    llm: LLMClient,
    request_id: str,
    *,
    use_cache: bool | None = None,
    bypass: str = "",
    tenant: str | None = None,
) -> tuple[LLMClient, CacheHeaders]:
    """The client that answers request ``request_id`` and the function giving its cache headers, on a
    server that may have no cache (then ``llm`` answers, no headers). ``use_cache=False`` or a
    ``bypass`` value such as ``"bypass"`` skips the cache; ``tenant`` (already checked with
    ``core.tenancy.cache_tenant``) picks a tenant's scope, ``None`` the asking tenant's own."""
    client = service.client if service is not None else None
    if client is None:
        return llm, dict
    if use_cache is False or bypass.lower() in BYPASS_VALUES:
        return llm, lambda: {BYPASS_HEADER: "bypass"}
    cached = client.with_tenant(tenant or None)

    def headers() -> dict[str, str]:
        decision = cached.pop_decision(request_id)
        if decision is None:
            return {}
        out: dict[str, str] = {BYPASS_HEADER: decision.status}
        if decision.similarity is not None:
            out[SIMILARITY_HEADER] = f"{decision.similarity:.4f}"
        if decision.status == "hit" and decision.entry_id is not None:
            out[ENTRY_HEADER] = str(decision.entry_id)
        return out

    return cached, headers


def model_privacy(settings: Settings, llm: LLMClient) -> Callable[[str], Policy]:
    """Each model's privacy policy, for the cache (``mask``: it keeps the masked form)."""

    def policy(model: str) -> Policy:
        config = served_config(settings, llm, model)
        return policy_for(config) if config is not None else "off"

    return policy
