"""``CachedLLMClient``: the ``LLMClient`` seam with the semantic cache in front.

A request is answered from the cache when the cache serves its model and it is not hotter than the
temperature bound; a fresh answer that finished normally is stored afterwards, off the request path,
reusing the embeddings of the lookup. Hits stream as word chunks, so streaming clients see the same
SSE shape either way. A cache failure never fails the request: it is logged and the model answers.

For a model whose privacy policy masks personal data (a remote model, ``datapilot.privacy``), the
cache keeps only the masked form: the question is looked up and stored with placeholders
(``<EMAIL_1>``), the answer is stored with the request's values put back into placeholders, and a hit
is restored with the asking request's own values. So no personal value is written to the cache's
stores (or sent to a remote embedder), and "mail a@x.com the report" answers "mail b@y.com the
report" with b@y.com. An answer that holds personal data the question did not is not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from datapilot.cache._cache import SemanticCache
from datapilot.cache._key import params_key
from datapilot.cache._types import CacheResult, Scope
from datapilot.core.client import LLMClient
from datapilot.core.config import CacheSettings
from datapilot.core.errors import DataPilotError
from datapilot.core.tenancy import cache_tenant, current_principal
from datapilot.core.types import ModelChunk, ModelInfo, ModelOutput, ModelRequest, Timing, Usage
from datapilot.privacy import Policy, RequestPrivacy

PolicyOf = Callable[[str], Policy]

log = logging.getLogger("datapilot.cache")
_PIECE = re.compile(r"\s*\S+\s*")
_DECISIONS_KEPT = 4096


@dataclass(slots=True)
class CacheDecision:
    status: Literal["hit", "miss", "bypass"]
    similarity: float | None = None
    reason: str = ""
    entry_id: int | None = None


def _digest(value: object) -> str | None:
    if value in (None, [], {}, ""):
        return None
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_params_key(request: ModelRequest) -> str:
    """The parameters that change an answer, for the cache key (see ``_key``): sampling, and the shape
    the answer must have, so an answer for one schema, grammar or tool set never serves another."""
    p = request.params
    tools = [t.to_dict() for t in request.tools] if request.uses_tools else None
    return params_key(
        kind="chat" if request.is_chat else "completion",
        seed=p.seed,
        max_tokens=p.max_tokens,
        stop=sorted(p.stop) if p.stop else None,
        response_format=_digest(request.response_format.to_dict()) if request.response_format is not None else None,
        grammar=_digest(request.grammar),
        tools=_digest(tools),
        tool_choice=request.tool_choice if tools else None,
        parallel_tool_calls=False if tools and not request.parallel_tool_calls else None,
    )


def replay_chunks(answer: str) -> list[str]:
    return _PIECE.findall(answer) or [answer]


class CachedLLMClient:
    def __init__(
        self,
        inner: LLMClient,
        cache: SemanticCache,
        settings: CacheSettings | None = None,
        tenant: str | None = None,
        privacy: PolicyOf | None = None,
    ) -> None:
        """``privacy``: each model's privacy policy (``mask``: the cache keeps the masked form)."""
        self.inner, self.cache = inner, cache
        self.settings = settings or cache.settings
        self.tenant = tenant
        self.privacy = privacy
        self._decisions: dict[str, CacheDecision] = {}
        self._pending: set[asyncio.Task[None]] = set()
        # Lookups awaiting their answer (flows' cache_store): the result, the masking, the key request.
        self._missed: dict[str, tuple[CacheResult, RequestPrivacy | None, ModelRequest]] = {}

    def with_tenant(self, tenant: str | None) -> CachedLLMClient:
        """A view of this client whose entries live in the tenant's own scope (``None``: the scope of the
        tenant asking, see ``scope``)."""
        view = CachedLLMClient(self.inner, self.cache, self.settings, tenant, self.privacy)
        view._decisions, view._pending, view._missed = self._decisions, self._pending, self._missed
        return view

    def scope(self, request: ModelRequest) -> Scope:
        """Where ``request``'s answer is looked up and stored: this view's tenant, else the tenant of the
        key asking (so one tenant is never answered from another's entries; an admin's, outside any
        tenant, live in the model's plain scope, as before tenants existed)."""
        return Scope(request.model, self.tenant if self.tenant is not None else cache_tenant(None))

    def serves(self, request: ModelRequest) -> bool:
        models = self.settings.models
        if request.logprobs:
            return False  # a stored answer has no logprobs to give
        return (not models or request.model in models) and request.params.temperature <= self.settings.max_temperature

    def pop_decision(self, request_id: str) -> CacheDecision | None:
        return self._decisions.pop(request_id, None)

    def _decide(self, request: ModelRequest, decision: CacheDecision) -> None:
        self._decisions[request.request_id] = decision
        while len(self._decisions) > _DECISIONS_KEPT:  # decisions nobody popped must not pile up
            self._decisions.pop(next(iter(self._decisions)))

    async def _lookup(self, request: ModelRequest) -> CacheResult | None:
        if not self.serves(request):
            self._decide(request, CacheDecision("bypass", reason="not cached: model or temperature"))
            return None
        if not current_principal().allows("cache", request.model):
            self._decide(request, CacheDecision("bypass", reason="not cached: outside the API key's cache scopes"))
            return None
        try:
            result = await self.cache.query(
                self.scope(request),
                request.messages,
                prompt=None if request.is_chat else request.prompt,
                params_key=request_params_key(request),
            )
        except DataPilotError as exc:
            log.warning("cache lookup failed, answering without it: %s", exc.message)
            self._decide(request, CacheDecision("bypass", reason="error"))
            return None
        self._decide(
            request, CacheDecision("hit" if result.hit else "miss", result.similarity, result.reason, result.id)
        )
        return result

    def _store(self, request: ModelRequest, result: CacheResult, answer: str) -> None:
        scope = self.scope(request)  # the asker's, decided now: the task below outlives the request

        async def run() -> None:
            try:
                await self.cache.insert(
                    scope,
                    request.messages,
                    answer,
                    prompt=None if request.is_chat else request.prompt,
                    params_key=request_params_key(request),
                    vectors=result.vectors,
                )
            except Exception:
                log.exception("could not store an answer in the cache")

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _masking(self, request: ModelRequest) -> tuple[RequestPrivacy | None, ModelRequest]:
        """The masking of ``request`` for a model whose policy is ``mask`` (else none), and the request
        the cache sees: the masked one. Quiet: the model's own masking reports what it masked."""
        if self.privacy is None or self.privacy(request.model) != "mask":
            return None, request
        masking = RequestPrivacy(request.model, "mask", request.request_id, "cache", quiet=True)
        keyed = masking.request(request)
        return (masking, keyed) if masking.masker.masked else (None, request)

    @staticmethod
    def _storable(masking: RequestPrivacy | None, answer: str) -> str | None:
        """What the cache may store of ``answer``: the answer itself, or, for a masked request, the
        answer with the request's values turned back into its placeholders; ``None`` when the answer
        holds personal data the request did not (it would be stored in the clear, or lost)."""
        if masking is None:
            return answer
        masker = masking.masker
        known = len(masker.mapping)
        masked = masker.mask(answer)
        if len(masker.mapping) > known:
            return None
        # A value written differently from how the detector finds it is still replaced, longest first.
        for placeholder, value in sorted(masker.mapping.items(), key=lambda kv: -len(kv[1])):
            masked = masked.replace(value, placeholder)
        return masked

    @staticmethod
    def _answer(masking: RequestPrivacy | None, cached: str) -> str:
        return masking.masker.restore(cached) if masking is not None else cached

    async def lookup(self, request: ModelRequest) -> ModelOutput | None:
        """The cached answer to ``request``, or ``None`` (then ``store`` its answer): the two calls a
        flow's ``cache_lookup``/``cache_store`` operators make around any model operator."""
        masking, keyed = self._masking(request)
        result = await self._lookup(keyed)
        if result is None:
            return None
        if result.hit and result.answer is not None:
            timing = Timing()
            timing.mark_token()
            timing.finish()
            return ModelOutput(self._answer(masking, result.answer), "stop", Usage(), request.model, timing)
        self._missed[request.request_id] = (result, masking, keyed)
        while len(self._missed) > _DECISIONS_KEPT:
            self._missed.pop(next(iter(self._missed)))
        return None

    async def store(self, request: ModelRequest, output: ModelOutput) -> None:
        """Store a fresh answer to a request ``lookup`` missed (reusing the lookup's embeddings)."""
        missed = self._missed.pop(request.request_id, None)
        if missed is not None and output.finish_reason == "stop" and output.text.strip():
            result, masking, keyed = missed
            self._store_answer(keyed, result, masking, output.text)

    def _store_answer(
        self, keyed: ModelRequest, result: CacheResult, masking: RequestPrivacy | None, answer: str
    ) -> None:
        stored = self._storable(masking, answer)
        if stored is None:
            log.info("not cached: the answer holds personal data the question did not (model %s)", keyed.model)
            return
        self._store(keyed, result, stored)

    async def drain(self) -> None:
        """Wait for answers still being stored (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def generate(self, request: ModelRequest) -> ModelOutput:
        masking, keyed = self._masking(request)
        result = await self._lookup(keyed)
        if result is not None and result.hit and result.answer is not None:
            timing = Timing()
            timing.mark_token()
            timing.finish()
            return ModelOutput(self._answer(masking, result.answer), "stop", Usage(), request.model, timing)
        out = await self.inner.generate(request)
        if result is not None and out.finish_reason == "stop" and out.text.strip():
            self._store_answer(keyed, result, masking, out.text)
        return out

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        return self._stream(request)

    async def _stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        masking, keyed = self._masking(request)
        result = await self._lookup(keyed)
        if result is not None and result.hit and result.answer is not None:
            timing = Timing()
            pieces = replay_chunks(self._answer(masking, result.answer))
            for i, piece in enumerate(pieces):
                timing.mark_token()
                last = i == len(pieces) - 1
                if last:
                    timing.finish()
                yield ModelChunk(
                    piece,
                    "stop" if last else None,
                    Usage(0, 0) if last else None,
                    timing if last else None,
                )
            return
        parts: list[str] = []
        chunks = self.inner.stream(request).__aiter__()
        try:
            async for chunk in chunks:
                parts.append(chunk.text)
                if chunk.finish_reason == "stop" and result is not None and "".join(parts).strip():
                    self._store_answer(keyed, result, masking, "".join(parts))
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def models(self) -> list[ModelInfo]:
        return await self.inner.models()
