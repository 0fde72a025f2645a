"""OpenAI ``tools`` over HTTP: an ``LLMClient`` for any OpenAI-compatible endpoint that also speaks
native tool calls (``ToolCaller``), so agents skip the JSON action format there. ``generate`` sends a
request's ``tools``, ``tool_choice`` and ``response_format`` as they are and reads the calls back.

Tests drive it with an ``httpx.MockTransport``; nothing here reaches the network by itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from datapilot.agents._agent import ToolCall, ToolReply
from datapilot.core.errors import UpstreamError
from datapilot.core.types import (
    FinishReason,
    Message,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    SamplingParams,
    ToolCallDelta,
    Usage,
)
from datapilot.core.types import ToolCall as CoreToolCall


def _params(params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p}
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = params.stop
    return body


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [c.to_dict() for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _finish(reason: Any) -> FinishReason:
    return reason if reason in ("length", "tool_calls") else "stop"


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
        messages = [_message(m) for m in request.messages or []]
        if request.messages is None:
            messages = [{"role": "user", "content": request.prompt or ""}]
        body: dict[str, Any] = {"model": request.model, "messages": messages, **_params(request.params)}
        if request.tools:
            body["tools"] = [t.to_dict() for t in request.tools]
            if request.tool_choice in ("none", "auto", "required"):
                body["tool_choice"] = request.tool_choice
            else:
                body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
            if not request.parallel_tool_calls:  # sent only when off: OpenAI's default is on
                body["parallel_tool_calls"] = False
        if request.response_format is not None and request.response_format.type != "text":
            body["response_format"] = request.response_format.to_dict()
        data = await self._post(body)
        choice = data["choices"][0]
        message = choice["message"]
        usage = data.get("usage") or {}
        calls = [
            CoreToolCall(c.get("id", f"call_{i}"), c["function"]["name"], c["function"].get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        return ModelOutput(
            message.get("content") or "",
            _finish(choice.get("finish_reason")),
            Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            request.model,
            tool_calls=calls,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        out = await self.generate(request)
        deltas = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(out.tool_calls)]
        yield ModelChunk(out.text, finish_reason=out.finish_reason, usage=out.usage, tool_calls=deltas or None)

    async def models(self) -> list[ModelInfo]:
        try:
            resp = await self._http.get("/models")
            names = [m["id"] for m in resp.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, json.JSONDecodeError):
            return []
        return [ModelInfo(n, "openai_compat", frozenset({"chat", "tools"})) for n in names]
