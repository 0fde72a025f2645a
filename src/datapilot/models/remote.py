"""``RemoteLLMClient``: the ``LLMClient`` seam over HTTP, for a DataPilot server or any
OpenAI-compatible one."""

from __future__ import annotations

from collections.abc import AsyncIterator

from datapilot.core.types import EmbeddingOutput, ModelChunk, ModelInfo, ModelOutput, ModelRequest, RerankOutput
from datapilot.models._openai_http import OpenAIHTTP


class RemoteLLMClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self._http = OpenAIHTTP(base_url, api_key, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def generate(self, request: ModelRequest) -> ModelOutput:
        return await self._http.generate(request, request.model)

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        return self._http.stream(request, request.model)

    async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
        return await self._http.embed(texts, model)

    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput:
        return await self._http.rerank(query, documents, model)

    async def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                m["id"],
                m.get("backend", "remote"),
                frozenset(m.get("capabilities", ())),
                m.get("status", "ready"),
                created=int(m.get("created", 0)),
                detail=m.get("detail"),
            )
            for m in await self._http.models()
        ]
