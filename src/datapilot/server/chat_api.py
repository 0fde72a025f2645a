"""``POST /api/chat``: every chat scene, run as its AWEL flow by the server's ``SceneService``.

Built-in scenes: ``data``, ``db_qa``, ``excel``, ``dashboard``, ``knowledge`` (an answer with
citations), ``agent`` (a team of agents) and ``chat``; ``POST /api/chat/scenes`` adds a user's flow
as a new scene, owned by the caller's tenant (the built-ins are every tenant's; a user's scene is seen
and run only by its tenant and admins). With ``"stream": true`` the flow's events go out through the
server's one SSE writer (``data: {...}`` per event, then ``data: [DONE]``); otherwise the final
answer comes back as one JSON object. The scenes' model calls go through the cache-aware client when
the server's cache is on. A client that disconnects cancels the work.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from datapilot.apps import ChatContext, SceneRequest, scene_text
from datapilot.core.errors import NotFoundError
from datapilot.server.deps import (
    CLIENT_CLOSED,
    ClientDisconnected,
    access,
    data_service,
    require_api_key,
    scene_service,
    services,
    until_disconnect,
)
from datapilot.server.sse import SSE_RESPONSES, sse_response


class ChatBody(BaseModel):
    model_config = {"extra": "forbid"}

    scene: str = Field(
        "data", description="a scene: data, db_qa, excel, dashboard, knowledge, agent, chat, or a user's"
    )
    question: str = Field(..., min_length=1)
    datasource: str | None = Field(None, description="a registered data source [default: the configured one]")
    model: str | None = None
    stream: bool = False
    style: str = Field("completion", pattern="^(completion|chat)$", description="text-to-SQL prompt style")
    space: str | None = Field(None, description="the knowledge space, for scenes knowledge and agent")


class SceneBody(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(..., min_length=1, max_length=64, description="the new scene's name")
    flow: str = Field(..., min_length=1, description="the flow, as AWEL JSON or DSL text")
    format: str = Field("json", pattern="^(json|dsl)$")
    replace: bool = False


async def chat_context(request: Request, body: ChatBody) -> ChatContext:
    """The environment a scene's flow runs in, for this request: the cache-aware model client, the
    server's data sources (with their linkers and grounding), knowledge base, agents and cache."""
    svc = services(request)
    data = data_service(request)
    model = await data.chat_model(body.model, body.datasource)
    llm = svc.chat_llm()
    ctx = data.chat_context(llm, model)
    ctx.knowledge = svc.knowledge.knowledge if svc.knowledge is not None else None
    ctx.agents = svc.agents
    cache = svc.cache.client if svc.cache is not None else None
    if cache is not None:
        ctx.stores["cache"] = {"default": cache}
    return ctx


def build_chat_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/chat/scenes")
    async def scenes(request: Request) -> dict[str, Any]:
        """The scenes this server can answer (``data``: names), each with its flow's nodes, origin, the
        parts it needs and the request fields it reads (``scenes``). A scene whose parts this server
        does not run (knowledge, agents) is left out."""
        svc = services(request)
        have = {part for part in ("data", "knowledge", "agents") if getattr(svc, part) is not None}
        served = [s for s in scene_service(request).scenes() if s.needs <= have]
        return {"data": [s.name for s in served], "scenes": [s.to_dict() for s in served]}

    @router.get("/chat/scenes/{name}")
    async def show_scene(name: str, request: Request, format: str = "json") -> dict[str, Any]:
        """A scene's flow, as AWEL JSON (``format=json``) or DSL text (``format=dsl``); 404 for a scene
        there is not, or another tenant's."""
        service = scene_service(request)
        scene = service.find(name)
        if scene is None:
            raise NotFoundError(service.unknown(name), param="name")
        return {**scene.to_dict(), "format": format, "flow": scene_text(scene.flow, format)}

    @router.post("/chat/scenes", status_code=201)
    async def add_scene(body: SceneBody, request: Request) -> dict[str, Any]:
        """Serve a flow (a changed copy of a scene) as a new scene, the caller's tenant's; kept in the
        scenes folder. A name another tenant's scene holds is a 409."""
        scene = scene_service(request).save(body.name, body.flow, body.format, replace=body.replace)
        return scene.to_dict()

    @router.post("/chat", response_model=None, openapi_extra=access("use"), responses=SSE_RESPONSES)
    async def chat_endpoint(body: ChatBody, request: Request) -> Response:
        service = scene_service(request)
        service.get(body.scene)  # an unknown scene is a 400 before any work
        ctx = await chat_context(request, body)
        turn = SceneRequest(body.question, body.datasource, body.model, body.style, space=body.space)
        if not body.stream:
            try:
                answer = await until_disconnect(request, service.answer(body.scene, ctx, turn))
            except ClientDisconnected:
                return Response(status_code=CLIENT_CLOSED)
            return JSONResponse({"scene": body.scene, **answer})
        events = service.events(body.scene, ctx, turn)
        # The first event is awaited here, so that what fails before the flow produced anything (an
        # unknown space or source, a refused goal) answers with its HTTP status, not inside the stream.
        first = await events.__anext__()
        return sse_response(request, events, extra={"scene": body.scene}, first=first)

    return router
