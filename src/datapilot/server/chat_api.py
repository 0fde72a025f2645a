"""``POST /api/chat``: the chat scenes: over data (``data``, ``db_qa``, ``excel``, ``dashboard``) and
over a knowledge space (``knowledge``: an answer with citations).

With ``"stream": true`` the scene's events go out as standard SSE (``data: {...}`` per event, then
``data: [DONE]``); otherwise the final answer comes back as one JSON object. The scenes' model calls
go through the cache-aware client when the server's cache is on. A client that disconnects cancels
the work.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from datapilot.apps import SceneRequest, chat, run_scene, scene_names
from datapilot.core.client import LLMClient
from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.rag import knowledge_chat
from datapilot.server.datasource_api import data_service
from datapilot.server.openai_api import ClientDisconnected, require_api_key, until_disconnect
from datapilot.server.state import services


class ChatBody(BaseModel):
    model_config = {"extra": "forbid"}

    scene: str = Field("data", description="data, db_qa, excel, dashboard, knowledge or agent")
    question: str = Field(..., min_length=1)
    datasource: str | None = Field(None, description="a registered data source [default: the configured one]")
    model: str | None = None
    stream: bool = False
    style: str = Field("completion", pattern="^(completion|chat)$", description="text-to-SQL prompt style")
    space: str | None = Field(None, description="the knowledge space, for scenes knowledge and agent")


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _llm(request: Request) -> LLMClient:
    svc = services(request)
    cache = getattr(svc, "cache", None)
    client = getattr(cache, "client", None) if cache is not None else None
    return client if client is not None else svc.llm


def build_chat_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/chat/scenes")
    async def scenes(request: Request) -> dict[str, Any]:
        knowledge = ["knowledge"] if services(request).knowledge is not None else []
        return {"data": sorted([*scene_names(), *knowledge])}

    @router.post("/chat", response_model=None)
    async def chat_endpoint(body: ChatBody, request: Request) -> Response:
        if body.scene == "knowledge":
            return await _knowledge(body, request)
        if body.scene == "agent":
            from datapilot.server.agents_api import AgentRunBody, run_agents

            goal = AgentRunBody(
                goal=body.question, datasource=body.datasource, space=body.space, model=body.model, stream=body.stream
            )
            return await run_agents(goal, request, scene="agent")
        data = data_service(request)
        model = await data.chat_model(body.model, body.datasource)
        ctx = data.chat_context(_llm(request), model)
        scene_request = SceneRequest(body.question, body.datasource, model, body.style)
        if not body.stream:
            try:
                answer = await until_disconnect(request, chat(body.scene, ctx, scene_request))
            except ClientDisconnected:
                return Response(status_code=499)
            return JSONResponse({"scene": body.scene, **answer})
        events = run_scene(body.scene, ctx, scene_request)  # an unknown scene is a 400 before streaming

        async def sse() -> AsyncIterator[str]:
            try:
                async for event in events:
                    yield f"data: {_json({'scene': body.scene, **event})}\n\n"
            except DataPilotError as exc:  # after the headers went out, the error travels in the stream
                yield f"data: {_json({'type': 'error', **exc.to_dict()})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            sse(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
        )

    return router


async def _knowledge(body: ChatBody, request: Request) -> Response:
    """The knowledge scene: citations first, then the answer, through the same response shapes."""
    service = services(request).knowledge
    if service is None:
        raise InvalidRequestError("knowledge is not available on this server", param="scene")
    if not body.space:
        raise InvalidRequestError("scene 'knowledge' needs a space: send \"space\": NAME", param="space")
    events = knowledge_chat(service.knowledge, _llm(request), body.space, body.question, model=body.model)
    if not body.stream:

        async def collect() -> dict[str, Any]:
            done: dict[str, Any] = {}
            async for event in events:
                if event.type == "done":
                    done = event.to_dict()
            return done

        try:
            done = await until_disconnect(request, collect())
        except ClientDisconnected:
            return Response(status_code=499)
        return JSONResponse({"scene": "knowledge", **done})
    first = await events.__anext__()  # an unknown space is a 404 before the stream starts

    async def sse() -> AsyncIterator[str]:
        try:
            yield f"data: {_json({'scene': 'knowledge', **first.to_dict()})}\n\n"
            async for event in events:
                yield f"data: {_json({'scene': 'knowledge', **event.to_dict()})}\n\n"
        except DataPilotError as exc:
            yield f"data: {_json({'type': 'error', **exc.to_dict()})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        sse(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )
