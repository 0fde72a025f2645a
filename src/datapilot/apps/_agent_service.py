"""The agent teams a server runs: registries (built-ins plus allowed plugins), long-term memory, the
traces of recent runs, and the run itself over the server's data sources and knowledge.

``prepare`` builds the team for one request, so bad input (an unknown data source, space, agent or
tool) is refused before anything streams; the ``AgentRun`` it returns then streams typed events or
collects the final answer, and keeps its trace either way.

A run belongs to the tenant that started it: a tenant lists and reads only its own runs (another's
is answered as missing), and its agents recall and add only its own long-term memories.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from datapilot.agents import (
    AGENTS,
    TOOLS,
    AgentSpec,
    LongTermMemory,
    PluginReport,
    Registry,
    Team,
    Tool,
    Trace,
    load_entry_points,
    load_folder,
)
from datapilot.apps import AgentRunRequest, agent_team
from datapilot.core.client import LLMClient
from datapilot.core.config import Settings
from datapilot.core.errors import InvalidRequestError, NotFoundError
from datapilot.core.events import Event, as_event
from datapilot.core.tenancy import DEFAULT_TENANT, can_see, owner_of_new

if TYPE_CHECKING:
    from datapilot.apps._data_service import DataService
    from datapilot.rag import KnowledgeBase

log = logging.getLogger("datapilot.apps")

LISTED_SETTINGS = {"max_rounds", "max_turns", "max_tokens", "code_timeout_s", "code_memory_mb"}


@dataclass
class AgentService:
    """Registries (built-ins plus allowed plugins), long-term memory, and the traces of recent runs.

    ``data``, ``knowledge`` and ``llm`` are what runs use: the server's data sources, its knowledge base
    (for the researcher) and its model client (cache-aware when the cache serves)."""

    settings: Settings
    agents: Registry[AgentSpec]
    tools: Registry[Tool]
    plugins: PluginReport
    memory: LongTermMemory | None = None
    runs: OrderedDict[str, Trace] = field(default_factory=OrderedDict)
    run_owners: dict[str, str] = field(default_factory=dict)  # run id -> the tenant that started it
    data: DataService | None = None
    knowledge: KnowledgeBase | None = None
    llm: LLMClient | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        embedder: Any = None,
        *,
        data: DataService | None = None,
        knowledge: KnowledgeBase | None = None,
        llm: LLMClient | None = None,
    ) -> AgentService:
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
        return cls(settings, agents, tools, report, memory, data=data, knowledge=knowledge, llm=llm)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        if self.memory is not None:
            self.memory.close()

    # --- what the server offers ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Agents, tools (with their parameters), plugin problems and the budget settings."""
        tools = [self.tools.get(n) for n in self.tools.names()]
        return {
            "agents": [self.agents.get(n).to_dict() for n in self.agents.names()],
            "tools": [{"name": t.name, "description": t.description, "parameters": t.parameters()} for t in tools],
            "plugins": self.plugins.to_dict(),
            "settings": self.settings.agents.model_dump(mode="json", include=LISTED_SETTINGS),
        }

    # --- traces --------------------------------------------------------------------------------------------

    def keep(self, trace: Trace, owner: str = DEFAULT_TENANT) -> None:
        """Keep ``trace``, the run ``owner`` (a tenant) started, among the recent runs."""
        if self.settings.agents.runs_kept <= 0:
            return
        self.runs[trace.run_id] = trace
        self.run_owners[trace.run_id] = owner
        while len(self.runs) > self.settings.agents.runs_kept:
            gone, _ = self.runs.popitem(last=False)
            self.run_owners.pop(gone, None)

    def trace(self, run_id: str) -> Trace:
        """A kept run's trace; another tenant's run is answered as one not kept."""
        trace = self.runs.get(run_id)
        if trace is None or not can_see(self.run_owners.get(run_id)):
            raise NotFoundError(f"no agent run {run_id!r} is kept here", param="run_id")
        return trace

    def list_runs(self) -> list[dict[str, Any]]:
        """The kept runs the caller may see (its tenant's; an admin: all), newest first."""
        return [
            {
                "run_id": t.run_id,
                "goal": t.goal,
                "started": t.started,
                "records": len(t.records),
                "owner": self.run_owners.get(t.run_id, DEFAULT_TENANT),
            }
            for t in reversed(self.runs.values())
            if can_see(self.run_owners.get(t.run_id))
        ]

    # --- runs ----------------------------------------------------------------------------------------------

    async def prepare(self, request: AgentRunRequest, *, memory: bool = True) -> AgentRun:
        """The team for ``request`` over this server's sources, ready to run; bad input raises here.
        The model is the request's, else ``agents.model``, else the data scenes' chat model."""
        if self.data is None:
            raise InvalidRequestError("agents need data sources, which are not available on this server")
        owner = owner_of_new()  # decided now, in the request: the run itself may stream after it
        model = await self.data.chat_model(request.model or self.settings.agents.model)
        llm = self.llm if self.llm is not None else self.data.llm
        request = replace(request, model=model)
        team = await agent_team(
            self.data.chat_context(llm, model),
            request,
            self.settings.agents,
            knowledge=self.knowledge,
            memory=self.memory.for_tenant(owner) if memory and self.memory is not None else None,
            registry=self.agents,
            tool_registry=self.tools,
        )
        return AgentRun(self, team, request, Trace(request.goal.strip()), owner)


@dataclass
class AgentRun:
    """One prepared team run: stream it (``events``) or wait for its answer (``result``), once."""

    service: AgentService
    team: Team
    request: AgentRunRequest
    trace: Trace
    owner: str = DEFAULT_TENANT  # the tenant that started it

    @property
    def run_id(self) -> str:
        return self.trace.run_id

    async def records(self) -> AsyncIterator[dict[str, Any]]:
        """The run's records as the team emits them; the trace is kept when the run ends or stops."""
        try:
            async for record in self.team.run(self.request.goal, plan=self.request.plan, trace=self.trace):
                yield record
        finally:
            self.service.keep(self.trace, self.owner)

    async def events(self) -> AsyncIterator[Event]:
        """The run as typed events: ``start``, ``plan``, ``step_start``, ``message``, ``tool_call``...
        ``report``, ``done`` (and ``error``)."""
        async for record in self.records():
            yield as_event(record)

    async def result(self) -> dict[str, Any]:
        """The run to its end: ``run_id``, ``report``, ``charts``, ``ok``, ``rounds``, ``model_calls``,
        ``tokens`` and the whole ``trace``."""
        final: dict[str, Any] = {}
        async for record in self.records():
            if record["type"] == "report":
                final.update(report=record["markdown"], charts=record["charts"])
            elif record["type"] == "done":
                final.update(
                    ok=record["ok"], rounds=record["rounds"], model_calls=record["model_calls"], tokens=record["tokens"]
                )
        return {"run_id": self.run_id, **final, "trace": self.trace.to_dict()}
