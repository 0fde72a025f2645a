"""``/api/agents``: run a team of agents on a goal, list agents and tools, fetch stored run traces.

``POST /api/agents/run`` streams every record of the run as SSE (``data: {...}`` per event, then
``data: [DONE]``): ``start``, ``plan``, ``step_start``, ``message``, ``tool_call``, ``tool_result``,
``table``, ``chart``, ``step_done``, ``review``, ``report``, ``done`` (and ``error``). Bad input (an
unknown data source, space, agent or tool) is a 4xx before the stream starts. The chat scene
``agent`` (``POST /api/chat``) runs through here too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from datapilot.apps import AgentRunRequest
from datapilot.server.deps import (
    CLIENT_CLOSED,
    ClientDisconnected,
    access,
    agent_service,
    require_api_key,
    until_disconnect,
)
from datapilot.server.sse import SSE_RESPONSES, sse_response


class AgentRunBody(BaseModel):
    model_config = {"extra": "forbid"}

    goal: str = Field(..., min_length=1, max_length=4000)
    datasource: str | None = Field(None, description="a registered data source [default: the configured one]")
    space: str | None = Field(None, description="a knowledge space the researcher may search")
    model: str | None = None
    stream: bool = True
    agents: list[str] | None = Field(None, description="agents on the team [default: all the resources allow]")
    tools: list[str] = Field(default_factory=list, description="registered extra tools given to every agent")
    plan: list[dict[str, Any]] | None = Field(None, description="steps to run instead of asking the planner")
    max_rounds: int | None = Field(None, ge=1, le=10)
    max_turns: int | None = Field(None, ge=1, le=20)
    max_tokens: int | None = Field(None, ge=100, le=1_000_000)
    memory: bool = Field(True, description="use and add to the long-term memory")

    def to_request(self) -> AgentRunRequest:
        return AgentRunRequest(
            self.goal,
            self.datasource,
            self.space,
            self.model,
            self.agents,
            self.tools,
            self.plan,
            self.max_rounds,
            self.max_turns,
            self.max_tokens,
        )


async def run_agents(body: AgentRunBody, request: Request, scene: str | None = None) -> Response:
    """Build the team (bad input fails here, as a 4xx), then stream the run or answer when it is done.
    ``scene``: tag every event (and the answer) with ``{"scene": scene}`` (the chat scene ``agent``)."""
    run = await agent_service(request).prepare(body.to_request(), memory=body.memory)
    tag = {"scene": scene} if scene else {}
    if body.stream:
        return sse_response(request, run.events(), extra=tag)
    try:
        result = await until_disconnect(request, run.result())
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse({**tag, **result})


def build_agents_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("")
    async def list_agents(request: Request) -> dict[str, Any]:
        return agent_service(request).describe()

    @router.post("/run", response_model=None, openapi_extra=access("use"), responses=SSE_RESPONSES)
    async def run(body: AgentRunBody, request: Request) -> Response:
        """Run a team on a goal: each record as SSE (``stream``, the default), or the answer when done."""
        return await run_agents(body, request)

    @router.get("/runs")
    async def runs(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": agent_service(request).list_runs()}

    @router.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        return await asyncio.to_thread(agent_service(request).trace(run_id).to_dict)

    return router
