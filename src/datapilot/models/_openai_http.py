"""The OpenAI wire protocol as a client: request bodies, SSE parsing and error mapping.

Shared by the ``openai_compat`` backend (a worker proxying to an upstream endpoint) and by
``RemoteLLMClient`` (an app or the CLI talking to a DataPilot server, or any compatible server).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from datapilot.core.errors import DataPilotError, UpstreamError
from datapilot.core.outbound import outbound_policy
from datapilot.core.types import (
    EmbeddingOutput,
    FinishReason,
    Message,
    ModelChunk,
    ModelOutput,
    ModelRequest,
    RerankOutput,
    Timing,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

# Upstream statuses that describe the caller's request and are passed on as they are; anything
# else (401 from the upstream's own key, 5xx, timeouts) is the gateway's problem: 502.
_PASS_THROUGH = {400, 404, 413, 422, 429}
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "eos": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}

log = logging.getLogger(__name__)


def message_dict(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [c.to_dict() for c in m.tool_calls]
        out["content"] = m.content or None
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _logprobs(obj: Any, chat: bool) -> list[TokenLogprob] | None:
    """OpenAI's logprobs as core values: ``{"content": [...]}`` on chat, parallel lists on completions."""
    if not obj:
        return None
    if chat:
        return [
            TokenLogprob(
                e["token"],
                float(e["logprob"]),
                e.get("bytes"),
                tuple(TopLogprob(t["token"], float(t["logprob"]), t.get("bytes")) for t in e.get("top_logprobs") or ()),
            )
            for e in obj.get("content") or ()
        ]
    tops = obj.get("top_logprobs") or []
    return [
        TokenLogprob(
            tok,
            float(lp),
            None,
            tuple(TopLogprob(t, float(v)) for t, v in (tops[i] or {}).items()) if i < len(tops) else (),
        )
        for i, (tok, lp) in enumerate(zip(obj.get("tokens") or (), obj.get("token_logprobs") or (), strict=False))
    ]


def _usage(obj: dict[str, Any] | None) -> Usage | None:
    if not obj:
        return None
    return Usage(int(obj.get("prompt_tokens") or 0), int(obj.get("completion_tokens") or 0))


class RefusedAddress(OSError):
    """A host name resolved, at connection time, to an address the outbound policy refuses."""


class PolicyResolver(AbstractResolver):
    """Resolves upstream host names for aiohttp and checks the addresses against the outbound policy
    (``datapilot.core.outbound``) at connection time: aiohttp connects to exactly the addresses checked
    here, so a name that passed when the model was defined and later re-resolves to a refused address
    (DNS rebinding: a cloud metadata or link-local address) is refused, not connected to."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        why = outbound_policy().refusal(host, [str(r["host"]) for r in found])
        if why is not None:
            raise RefusedAddress(f"not allowed by the outbound policy: {why}")
        return found

    async def close(self) -> None:
        await self._inner.close()


class OpenAIHTTP:
    """One connection pool per upstream (aiohttp: under concurrency it costs far less than httpx)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        stream_usage: bool = True,
    ) -> None:
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.stream_usage = stream_usage
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=10.0),
                # A kept-alive connection per concurrent request: reconnecting costs more than a request.
                connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30, resolver=PolicyResolver()),
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def body(self, request: ModelRequest, model: str, stream: bool) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {"model": model, "temperature": p.temperature, "top_p": p.top_p}
        if request.messages is not None:
            body["messages"] = [message_dict(m) for m in request.messages]
            if request.tools:
                body["tools"] = [t.to_dict() for t in request.tools]
                choice = request.tool_choice
                body["tool_choice"] = (
                    choice
                    if choice in ("none", "auto", "required")
                    else {"type": "function", "function": {"name": choice}}
                )
                if not request.parallel_tool_calls:
                    body["parallel_tool_calls"] = False
            if request.logprobs:
                body["logprobs"] = True
                if request.top_logprobs:
                    body["top_logprobs"] = request.top_logprobs
        else:
            body["prompt"] = request.prompt or ""
            if request.logprobs:
                body["logprobs"] = request.top_logprobs
        if request.response_format is not None:
            body["response_format"] = request.response_format.to_dict()
        if request.grammar is not None:
            body["grammar"] = request.grammar  # llama.cpp's server and DataPilot name it so
        if p.max_tokens is not None:
            body["max_tokens"] = p.max_tokens
        if p.stop:
            body["stop"] = p.stop
        if p.seed is not None:
            body["seed"] = p.seed
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        if stream:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def _error(self, status: int, payload: bytes) -> DataPilotError:
        try:
            err = json.loads(payload)["error"]
            message = err.get("message") or str(err)
            param, code = err.get("param"), err.get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, param, code = payload[:500].decode("utf-8", "replace"), None, None
        return UpstreamError(
            f"upstream {self.base_url} answered {status}: {message}",
            status_code=status if status in _PASS_THROUGH else 502,
            param=param,
            code=code,
        )

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        refused = getattr(exc, "os_error", None)
        if isinstance(refused, RefusedAddress):
            return UpstreamError(f"upstream {self.base_url}: {refused}", code="url_not_allowed")
        return UpstreamError(
            f"cannot reach upstream {self.base_url}: {type(exc).__name__}: {exc}; "
            "check that it is running and that base_url is right",
            code="upstream_unreachable",
        )

    async def _send(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST ``body``; sent again, once, on a new connection when a kept-alive one turns out closed by
        the upstream before it took the request (its idle timeout raced ours: uvicorn closes idle
        connections after 5 s by default)."""
        try:
            return await self._http().post(self.base_url + path, json=body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise  # no connection at all: nothing stale to retry
            log.debug("upstream %s closed a kept-alive connection (%s); sending again", self.base_url, exc)
            return await self._http().post(self.base_url + path, json=body)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with await self._send(path, body) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise self._error(resp.status, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        result: dict[str, Any] = json.loads(payload)
        return result

    async def generate(self, request: ModelRequest, model: str) -> ModelOutput:
        path = "/chat/completions" if request.is_chat else "/completions"
        timing = Timing()
        obj = await self._post(path, self.body(request, model, stream=False))
        choice = obj["choices"][0]
        text = choice["message"].get("content") or "" if request.is_chat else choice.get("text") or ""
        finish = _FINISH.get(choice.get("finish_reason") or "stop", "stop")
        ttft_ms = (obj.get("metrics") or {}).get("ttft_ms")  # a DataPilot upstream reports its own
        if isinstance(ttft_ms, int | float):
            timing.first_token_at = timing.started + ttft_ms / 1000
        usage = _usage(obj.get("usage")) or Usage()
        calls = [
            ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "")
            for c in (choice.get("message") or {}).get("tool_calls") or ()
        ]
        return ModelOutput(
            text,
            finish,
            usage,
            obj.get("model", model),
            timing,
            calls,
            _logprobs(choice.get("logprobs"), request.is_chat),
        )

    async def stream(self, request: ModelRequest, model: str) -> AsyncIterator[ModelChunk]:
        path = "/chat/completions" if request.is_chat else "/completions"
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            async with await self._send(path, self.body(request, model, stream=True)) as resp:
                if resp.status != 200:
                    raise self._error(resp.status, await resp.read())
                async for raw in resp.content:  # one line at a time
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        continue  # read to the end of the body, so the connection can be reused
                    obj = json.loads(data)
                    if "error" in obj:
                        raise self._error(502, data.encode())
                    usage = _usage(obj.get("usage")) or usage
                    for choice in obj.get("choices") or ():
                        delta = choice.get("delta") or {}
                        text = delta.get("content") if request.is_chat else choice.get("text")
                        if choice.get("finish_reason"):
                            finish = _FINISH.get(choice["finish_reason"], "stop")
                        calls = [
                            ToolCallDelta(
                                int(c.get("index", 0)),
                                c.get("id"),
                                (c.get("function") or {}).get("name"),
                                (c.get("function") or {}).get("arguments") or "",
                            )
                            for c in delta.get("tool_calls") or ()
                        ]
                        logprobs = _logprobs(choice.get("logprobs"), request.is_chat)
                        if text or calls or logprobs:
                            yield ModelChunk(text or "", tool_calls=calls or None, logprobs=logprobs)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        # No usage from the upstream (stream_usage off, or an upstream without it): the measuring layer
        # counts the tokens it saw instead of reporting none.
        yield ModelChunk("", finish_reason=finish or "stop", usage=usage)

    async def embed(self, texts: list[str], model: str) -> EmbeddingOutput:
        obj = await self._post("/embeddings", {"model": model, "input": texts, "encoding_format": "base64"})
        rows = sorted(obj["data"], key=lambda d: d["index"])
        vectors = np.stack(
            [
                np.frombuffer(base64.b64decode(r["embedding"]), dtype=np.float32)
                if isinstance(r["embedding"], str)
                else np.asarray(r["embedding"], dtype=np.float32)
                for r in rows
            ]
        )
        return EmbeddingOutput(vectors, _usage(obj.get("usage")) or Usage())

    async def rerank(self, query: str, documents: list[str], model: str) -> RerankOutput:
        obj = await self._post("/rerank", {"model": model, "query": query, "documents": documents})
        scores = [0.0] * len(documents)
        for r in obj["results"]:
            scores[int(r["index"])] = float(r["relevance_score"])
        tokens = int((obj.get("usage") or {}).get("total_tokens") or 0)
        return RerankOutput(scores, Usage(tokens))

    async def models(self) -> list[dict[str, Any]]:
        try:
            async with self._http().get(self.base_url + "/models") as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise self._error(resp.status, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        data: list[dict[str, Any]] = json.loads(payload)["data"]
        return data
