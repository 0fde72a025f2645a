"""``/api/agents``: run a team of agents on a goal, list agents and tools, fetch stored run traces.

``POST /api/agents/run`` streams every record of the run as SSE (``data: {...}`` per event, then
``data: [DONE]``): ``start``, ``plan``, ``step_start``, ``message``, ``tool_call``, ``tool_result``,
``table``, ``chart``, ``step_done``, ``review``, ``report``, ``done`` (and ``error``). Bad input (an
unknown data source, space, agent or tool) is a 4xx before the stream starts. The chat scene
``agent`` (``POST /api/chat``) runs through here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from datapilot.agents import (
    AGENTS,
    TOOLS,
    AgentSpec,
    LongTermMemory,
    PluginReport,
    Registry,
    Tool,
    Trace,
    load_entry_points,
    load_folder,
)
from datapilot.apps import AgentRunRequest, agent_team
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError, NotFoundError
from datapilot.server.datasource_api import data_service
from datapilot.server.openai_api import ClientDisconnected, require_api_key, until_disconnect
from datapilot.server.state import services

log = logging.getLogger("datapilot.server")


@dataclass
class AgentService:
    """Registries (built-ins plus allowed plugins), long-term memory, and the traces of recent runs."""

    settings: Settings
    agents: Registry[AgentSpec]
    tools: Registry[Tool]
    plugins: PluginReport
    memory: LongTermMemory | None = None
    runs: OrderedDict[str, Trace] = field(default_factory=OrderedDict)

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Any = None) -> AgentService:
        cfg = settings.agents
        agents, tools = AGENTS.copy(cfg.plugins), TOOLS.copy(cfg.plugins)
        report = load_entry_points(tools, agents)
        if cfg.plugins_dir is not None:
            report = load_folder(cfg.plugins_dir, tools, agents, report)
        for problem in report.errors + report.refused:
            log.warning("agent plugin: %s", problem)
        memory = None
        if cfg.memory and embedder is not None:
            memory = LongTermMemory(embedder, cfg.memory_path or settings.home / "agents" / "memory.db")
        return cls(settings, agents, tools, report, memory)

    def keep(self, trace: Trace) -> None:
        if self.settings.agents.runs_kept <= 0:
            return
        self.runs[trace.run_id] = trace
        while len(self.runs) > self.settings.agents.runs_kept:
            self.runs.popitem(last=False)

    def trace(self, run_id: str) -> Trace:
        try:
            return self.runs[run_id]
        except KeyError:
            raise NotFoundError(f"no agent run {run_id!r} is kept here", param="run_id") from None


def agent_service(request: Request) -> AgentService:
    svc = getattr(request.app.state, "agent_service", None)
    if svc is None:
        state = services(request)
        knowledge = getattr(state, "knowledge", None)
        data = getattr(state, "data", None)
        embedder = knowledge.knowledge.embedder if knowledge is not None else getattr(data, "embedder", None)
        svc = AgentService.from_settings(state.settings, embedder)
        request.app.state.agent_service = svc
    return svc


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


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def _llm(request: Request) -> Any:
    svc = services(request)
    cache = getattr(svc, "cache", None)
    client = getattr(cache, "client", None) if cache is not None else None
    return client if client is not None else svc.llm


async def run_agents(body: AgentRunBody, request: Request, scene: str | None = None) -> Response:
    """Build the team (bad input fails here, as a 4xx), then stream the run or answer when it is done."""
    svc = agent_service(request)
    data = data_service(request)
    model = await data.chat_model(body.model or svc.settings.agents.model)
    ctx = data.chat_context(_llm(request), model)
    knowledge = getattr(services(request), "knowledge", None)
    run = AgentRunRequest(
        body.goal,
        body.datasource,
        body.space,
        model,
        body.agents,
        body.tools,
        body.plan,
        body.max_rounds,
        body.max_turns,
        body.max_tokens,
    )
    team = await agent_team(
        ctx,
        run,
        svc.settings.agents,
        knowledge=knowledge.knowledge if knowledge else None,
        memory=svc.memory if body.memory else None,
        registry=svc.agents,
        tool_registry=svc.tools,
    )
    trace = Trace(body.goal.strip())
    tag = {"scene": scene} if scene else {}
    if not body.stream:

        async def collect() -> dict[str, Any]:
            final: dict[str, Any] = {}
            async for event in team.run(run.goal, plan=run.plan, trace=trace):
                if event["type"] == "report":
                    final.update(report=event["markdown"], charts=event["charts"])
                elif event["type"] == "done":
                    final.update(
                        ok=event["ok"], rounds=event["rounds"], model_calls=event["model_calls"], tokens=event["tokens"]
                    )
            return final

        try:
            final = await until_disconnect(request, collect())
        except ClientDisconnected:
            return Response(status_code=499)
        finally:
            svc.keep(trace)
        return JSONResponse({**tag, "run_id": trace.run_id, **final, "trace": trace.to_dict()})
    events = team.run(run.goal, plan=run.plan, trace=trace)

    async def sse() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {_json({**tag, **event})}\n\n"
        except DataPilotError as exc:
            yield f"data: {_json({'type': 'error', **exc.to_dict()})}\n\n"
        finally:
            svc.keep(trace)
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        sse(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


def build_agents_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("")
    async def list_agents(request: Request) -> dict[str, Any]:
        svc = agent_service(request)
        tools = [svc.tools.get(n) for n in svc.tools.names()]
        return {
            "agents": [svc.agents.get(n).to_dict() for n in svc.agents.names()],
            "tools": [{"name": t.name, "description": t.description, "parameters": t.parameters()} for t in tools],
            "plugins": svc.plugins.to_dict(),
            "settings": svc.settings.agents.model_dump(
                mode="json", include={"max_rounds", "max_turns", "max_tokens", "code_timeout_s", "code_memory_mb"}
            ),
        }

    @router.post("/run", response_model=None)
    async def run(body: AgentRunBody, request: Request) -> Response:
        return await run_agents(body, request)

    @router.get("/runs")
    async def runs(request: Request) -> dict[str, Any]:
        svc = agent_service(request)
        items = [
            {"run_id": t.run_id, "goal": t.goal, "started": t.started, "records": len(t.records)}
            for t in reversed(svc.runs.values())
        ]
        return {"object": "list", "data": items}

    @router.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        return await asyncio.to_thread(agent_service(request).trace(run_id).to_dict)

    return router
