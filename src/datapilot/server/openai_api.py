"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Thin: validate with the pydantic models, call the ``LLMClient`` held in app state, shape the answer.
Streams are standard SSE ending with ``data: [DONE]``; a client that goes away cancels the work.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from datapilot.core.audit import audit_note
from datapilot.core.client import LLMClient
from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ModelChunk, ModelOutput, ModelRequest, Timing, TokenLogprob, Usage
from datapilot.models.service import model_info
from datapilot.server.cache_api import serving_client
from datapilot.server.deps import (
    CLIENT_CLOSED,
    ClientDisconnected,
    Services,
    access,
    require_api_key,
    services,
    until_disconnect,
)
from datapilot.server.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
)
from datapilot.server.sse import sse_response


def metrics_dict(timing: Timing | None, usage: Usage) -> dict[str, float | None]:
    if timing is None:
        return {}
    ttft = timing.ttft_s
    return {
        "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
        "latency_ms": round(timing.latency_s * 1000, 2),
        "tokens_per_second": round(timing.tokens_per_second(usage.completion_tokens), 2),
    }


def timing_headers(timing: Timing | None, usage: Usage, request_id: str) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    for key, value in metrics_dict(timing, usage).items():
        if value is not None:
            headers[f"x-datapilot-{key.replace('_', '-')}"] = str(value)
    return headers


ChunkShape = Callable[[ModelChunk | None, bool], dict[str, Any]]


def chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    return None if logprobs is None else {"content": [t.to_dict() for t in logprobs], "refusal": None}


def completion_logprobs(logprobs: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists of tokens, logprobs, text offsets and top alternatives."""
    if logprobs is None:
        return None
    offsets, at = [], offset
    for t in logprobs:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in logprobs],
        "token_logprobs": [t.logprob for t in logprobs],
        "top_logprobs": (
            [{a.token: a.logprob for a in t.top} for t in logprobs] if any(t.top for t in logprobs) else None
        ),
        "text_offset": offsets,
    }


def _chat_chunk(base: dict[str, Any]) -> ChunkShape:
    def shape(chunk: ModelChunk | None, first: bool) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if first:
            delta = {"role": "assistant", "content": ""}
        elif chunk is not None:
            if chunk.text:
                delta["content"] = chunk.text
            if chunk.tool_calls:
                delta["tool_calls"] = [d.to_dict() for d in chunk.tool_calls]
        finish = chunk.finish_reason if chunk is not None and not first else None
        logprobs = chat_logprobs(chunk.logprobs) if chunk is not None and not first else None
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": _finish(finish)}
        return {**base, "object": "chat.completion.chunk", "choices": [choice]}

    return shape


def _completion_chunk(base: dict[str, Any]) -> ChunkShape:
    def shape(chunk: ModelChunk | None, first: bool) -> dict[str, Any]:
        text = chunk.text if chunk is not None else ""
        finish = chunk.finish_reason if chunk is not None else None
        logprobs = completion_logprobs(chunk.logprobs) if chunk is not None else None
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": _finish(finish)}
        return {**base, "object": "text_completion", "choices": [choice]}

    return shape


def _finish(reason: str | None) -> str | None:
    # "cancelled" only reaches a client that is gone; report anything unusual as "stop".
    return None if reason is None else reason if reason in ("stop", "length", "tool_calls") else "stop"


async def _stream(
    request: Request,
    svc: Services,
    mreq: ModelRequest,
    shape: ChunkShape,
    base: dict[str, Any],
    include_usage: bool,
    role_chunk: bool,
    llm: LLMClient | None = None,
    extra_headers: Callable[[], dict[str, str]] = dict,
) -> Response:
    chunks = (llm or svc.llm).stream(mreq).__aiter__()
    try:
        # Wait for the first chunk before answering, so a bad request still gets its 4xx status.
        first: ModelChunk | None = await until_disconnect(request, chunks.__anext__())
    except StopAsyncIteration:
        first = None
    except ClientDisconnected:
        await _aclose(chunks)
        return Response(status_code=CLIENT_CLOSED)
    except BaseException:
        await _aclose(chunks)
        raise

    async def openai_chunks() -> AsyncIterator[dict[str, Any]]:
        # The chunk JSON is OpenAI's; errors and [DONE] are the SSE writer's.
        try:
            if role_chunk:
                yield shape(None, True)
            chunk = first
            while chunk is not None:
                out = shape(chunk, False)
                if chunk.finish_reason is not None:
                    usage = chunk.usage or Usage()
                    out["metrics"] = metrics_dict(chunk.timing, usage)
                    yield out
                    if include_usage:
                        yield {**base, "object": out["object"], "choices": [], "usage": usage.to_dict()}
                    break
                if chunk.text or chunk.tool_calls or chunk.logprobs:
                    yield out
                chunk = await anext(chunks, None)
        finally:
            await _aclose(chunks)

    return sse_response(request, openai_chunks(), headers={"x-request-id": mreq.request_id, **extra_headers()})


async def _aclose(chunks: AsyncIterator[ModelChunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


def _base(prefix: str, mreq: ModelRequest) -> dict[str, Any]:
    return {"id": f"{prefix}-{mreq.request_id}", "created": int(time.time()), "model": mreq.model}


async def _generate(
    request: Request, svc: Services, mreq: ModelRequest, llm: LLMClient | None = None
) -> ModelOutput | Response:
    try:
        return await until_disconnect(request, (llm or svc.llm).generate(mreq))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)


def _supports(capabilities: frozenset[str]) -> dict[str, bool]:
    return {k: k in capabilities for k in ("json_schema", "tools", "grammar", "logprobs")}


def build_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/models")
    async def list_models(request: Request) -> dict[str, Any]:
        infos = await services(request).llm.models()
        return {
            "object": "list",
            "data": [
                {
                    "id": m.name,
                    "object": "model",
                    "created": m.created,
                    "owned_by": "datapilot",
                    "backend": m.backend,
                    "capabilities": sorted(m.capabilities),
                    "supports": _supports(m.capabilities),
                    "status": m.status,
                    "detail": m.detail,
                }
                for m in infos
            ],
        }

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        info = await model_info(services(request).llm, model_id)
        return {
            "id": info.name,
            "object": "model",
            "created": info.created,
            "owned_by": "datapilot",
            "status": info.status,
            "capabilities": sorted(info.capabilities),
            "supports": _supports(info.capabilities),
        }

    @router.post("/chat/completions", response_model=None, openapi_extra=access("use"))
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        svc = services(request)
        mreq = body.to_model_request()
        audit_note(model=mreq.model, request_id=mreq.request_id)
        base = _base("chatcmpl", mreq)
        llm, cache_headers = serving_client(request, svc.llm, mreq, body.cache)
        if body.stream:
            return await _stream(
                request, svc, mreq, _chat_chunk(base), base, body.include_usage, True, llm, cache_headers
            )
        out = await _generate(request, svc, mreq, llm)
        if isinstance(out, Response):
            return out
        message: dict[str, Any] = {"role": "assistant", "content": out.text, "refusal": None}
        if out.tool_calls:
            message["tool_calls"] = [c.to_dict() for c in out.tool_calls]
            message["content"] = out.text or None
        logprobs = chat_logprobs(out.logprobs) if mreq.logprobs else None
        payload = {
            **base,
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": _finish(out.finish_reason)}
            ],
            "usage": out.usage.to_dict(),
            "metrics": metrics_dict(out.timing, out.usage),
        }
        return JSONResponse(
            payload, headers={**timing_headers(out.timing, out.usage, mreq.request_id), **cache_headers()}
        )

    @router.post("/completions", response_model=None, openapi_extra=access("use"))
    async def completions(body: CompletionRequest, request: Request) -> Response:
        svc = services(request)
        mreq = body.to_model_request()
        audit_note(model=mreq.model, request_id=mreq.request_id)
        base = _base("cmpl", mreq)
        llm, cache_headers = serving_client(request, svc.llm, mreq, body.cache)
        if body.stream:
            return await _stream(
                request, svc, mreq, _completion_chunk(base), base, body.include_usage, False, llm, cache_headers
            )
        out = await _generate(request, svc, mreq, llm)
        if isinstance(out, Response):
            return out
        text = (mreq.prompt or "") + out.text if body.echo else out.text
        payload = {
            **base,
            "object": "text_completion",
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": completion_logprobs(out.logprobs) if mreq.logprobs else None,
                    "finish_reason": _finish(out.finish_reason),
                }
            ],
            "usage": out.usage.to_dict(),
            "metrics": metrics_dict(out.timing, out.usage),
        }
        return JSONResponse(
            payload, headers={**timing_headers(out.timing, out.usage, mreq.request_id), **cache_headers()}
        )

    @router.post("/embeddings", response_model=None, openapi_extra=access("use"))
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        svc = services(request)
        texts = body.texts()
        audit_note(model=body.model)
        started = Timing()
        out = await svc.llm.embed(body.model, texts)
        started.finish()
        dim = out.vectors.shape[1]
        if body.dimensions is not None and body.dimensions != dim:
            raise InvalidRequestError(
                f"model {body.model!r} produces {dim}-dimensional embeddings; dimensions={body.dimensions} "
                "is not supported",
                param="dimensions",
            )
        if body.encoding_format == "base64":
            data = [base64.b64encode(v.tobytes()).decode("ascii") for v in out.vectors]
        else:
            data = out.vectors.tolist()
        payload = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": body.model,
            "usage": {"prompt_tokens": out.usage.prompt_tokens, "total_tokens": out.usage.prompt_tokens},
        }
        rid = uuid.uuid4().hex
        return JSONResponse(
            payload, headers={"x-request-id": rid, "x-datapilot-latency-ms": f"{started.latency_s * 1000:.2f}"}
        )

    @router.post("/rerank", response_model=None, openapi_extra=access("use"))
    async def rerank(body: RerankRequest, request: Request) -> Response:
        texts = body.texts()
        audit_note(model=body.model)
        started = Timing()
        out = await services(request).llm.rerank(body.model, body.query, texts)
        started.finish()
        order = sorted(range(len(texts)), key=lambda i: out.scores[i], reverse=True)[: body.top_n]
        results = [
            {
                "index": i,
                "relevance_score": out.scores[i],
                **({"document": {"text": texts[i]}} if body.return_documents else {}),
            }
            for i in order
        ]
        rid = uuid.uuid4().hex
        payload = {
            "id": rid,
            "model": body.model,
            "results": results,
            "usage": {"total_tokens": out.usage.prompt_tokens},
            "meta": {"billed_units": {"search_units": 1}},
        }
        return JSONResponse(
            payload, headers={"x-request-id": rid, "x-datapilot-latency-ms": f"{started.latency_s * 1000:.2f}"}
        )

    return router
