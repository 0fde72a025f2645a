"""OpenAI ``tools`` over HTTP: an ``LLMClient`` for any OpenAI-compatible endpoint that also speaks
native tool calls (``ToolCaller``), so agents skip the JSON action format there.

Tests drive it with an ``httpx.MockTransport``; nothing here reaches the network by itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from datapilot.agents._agent import ToolCall, ToolReply
from datapilot.core.errors import UpstreamError
from datapilot.core.types import FinishReason, ModelChunk, ModelInfo, ModelOutput, ModelRequest, SamplingParams, Usage


def _params(params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p}
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = params.stop
    return body


class OpenAIToolsClient:
    def __init__(
        self, base_url: str, api_key: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, transport=transport, timeout=600)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._http.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the model endpoint did not answer: {exc}") from None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:300]
            raise UpstreamError(
                f"the model endpoint answered {resp.status_code}: {message}",
                status_code=resp.status_code if resp.status_code < 500 else 502,
            )
        data: dict[str, Any] = resp.json()
        return data

    async def chat_with_tools(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]], params: SamplingParams
    ) -> ToolReply:
        data = await self._post({"model": model, "messages": messages, "tools": tools, **_params(params)})
        message = data["choices"][0]["message"]
        calls = [
            ToolCall(c.get("id", f"call_{i}"), c["function"]["name"], c["function"].get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        usage = data.get("usage") or {}
        return ToolReply(
            message.get("content") or "",
            calls,
            Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
        )

    async def generate(self, request: ModelRequest) -> ModelOutput:
        messages = [{"role": m.role, "content": m.content} for m in request.messages or []]
        if request.messages is None:
            messages = [{"role": "user", "content": request.prompt or ""}]
        data = await self._post({"model": request.model, "messages": messages, **_params(request.params)})
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        return ModelOutput(
            choice["message"].get("content") or "",
            finish,
            Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            request.model,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        out = await self.generate(request)
        yield ModelChunk(out.text, finish_reason=out.finish_reason, usage=out.usage)

    async def models(self) -> list[ModelInfo]:
        try:
            resp = await self._http.get("/models")
            names = [m["id"] for m in resp.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, json.JSONDecodeError):
            return []
        return [ModelInfo(n, "openai_compat", frozenset({"chat", "tools"})) for n in names]
