"""Proxy to any OpenAI-compatible endpoint (OpenAI, DeepSeek, Qwen, Ollama, vLLM, llama.cpp server,
another DataPilot). Streams are passed through chunk by chunk.

Structured generation (``response_format``, ``tools``, ``grammar``, ``logprobs``) is forwarded as it
came, tool-call deltas and logprobs streamed back: the upstream enforces it, and its 400 reaches the client.

``base_url`` is checked against the process-wide outbound policy (``datapilot.core.outbound``) at load:
link-local and cloud metadata hosts are refused unless ``[security] outbound_allow`` names them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from datapilot.core.errors import ConfigError
from datapilot.core.outbound import outbound_policy
from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelOutput, ModelRequest, RerankOutput
from datapilot.models._openai_http import OpenAIHTTP
from datapilot.models.backend import CHAT, COMPLETION, EMBEDDING, RERANK, ModelBackend
from datapilot.models.structured import PASSTHROUGH

_KNOWN = {CHAT, COMPLETION, EMBEDDING, RERANK}


class OpenAICompatBackend(ModelBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        if not cfg.base_url:
            raise ConfigError(f"model {cfg.name!r}: the openai_compat backend needs base_url")
        caps = set(cfg.params.get("capabilities", [CHAT, COMPLETION]))
        if not caps <= _KNOWN:
            raise ConfigError(f"model {cfg.name!r}: unknown capabilities {sorted(caps - _KNOWN)}")
        if caps & {CHAT, COMPLETION} and cfg.params.get("structured", True):
            caps.add(PASSTHROUGH)  # structured: false for an upstream known to refuse it
        self.capabilities = frozenset(caps)  # type: ignore[misc]
        self.upstream_model = cfg.upstream_model or cfg.name
        self._http = OpenAIHTTP(
            cfg.base_url,
            cfg.api_key.get_secret_value() if cfg.api_key else None,
            timeout=float(cfg.params.get("timeout", 600)),
            stream_usage=bool(cfg.params.get("stream_usage", True)),
        )

    async def load(self) -> None:
        """Only the outbound policy is checked (the host name resolved); the upstream itself is checked
        lazily so a proxy can start before it."""
        policy = outbound_policy()
        await asyncio.to_thread(policy.check_url, self.config.base_url, what=f"model {self.config.name!r}: base_url")

    async def close(self) -> None:
        await self._http.aclose()

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        return self._http.stream(request, self.upstream_model)

    async def generate(self, request: ModelRequest) -> ModelOutput:
        out = await self._http.generate(request, self.upstream_model)
        out.model = self.config.name
        return out

    async def embed(self, texts: list[str]) -> EmbeddingOutput:
        return await self._http.embed(texts, self.upstream_model)

    async def rerank(self, query: str, documents: list[str]) -> RerankOutput:
        return await self._http.rerank(query, documents, self.upstream_model)
