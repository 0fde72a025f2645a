"""The ``agent`` scene and the ``agent_team`` AWEL operator: a team of agents over a data source (and
optionally a knowledge space) whose charts are drawn by this layer's chart functions.

``agent_team`` builds the team for one request, raising bad input (unknown data source, space, agent
or tool) before anything streams; ``agent_events`` runs it. Both the REST endpoint, the chat scene
and the CLI use them, so they behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datapilot.agents import (
    AgentSpec,
    DataResource,
    KnowledgeResource,
    LongTermMemory,
    Registry,
    Team,
    TeamResources,
    Tool,
    Trace,
    build_team,
)
from datapilot.apps._charts import ChartSpec, render_chart
from datapilot.apps._scenes import ChatContext, SceneRequest, chart_payload
from datapilot.awel import BaseOperator, CallContext, FlowResources, Requirement, register_operator
from datapilot.core.client import LLMClient
from datapilot.core.config import AgentSettings, DataSettings
from datapilot.core.errors import ConfigError, InvalidRequestError
from datapilot.core.events import DoneEvent, as_event
from datapilot.datasource import Connector, QueryResult, SQLAlchemyConnector, sqlite_read_only_url
from datapilot.text2sql import SchemaLinker, Text2SQLOptions


def chart_svg(chart: dict[str, Any], result: QueryResult) -> str:
    return render_chart(ChartSpec(**chart["spec"]), result, "svg").decode("utf-8")


@dataclass
class AgentRunRequest:
    goal: str
    datasource: str | None = None
    space: str | None = None
    model: str | None = None
    agents: list[str] | None = None
    tools: list[str] = field(default_factory=list)
    plan: list[dict[str, Any]] | None = None
    max_rounds: int | None = None
    max_turns: int | None = None
    max_tokens: int | None = None

    def settings(self, base: AgentSettings) -> AgentSettings:
        over = {
            k: v
            for k, v in (
                ("max_rounds", self.max_rounds),
                ("max_turns", self.max_turns),
                ("max_tokens", self.max_tokens),
            )
            if v is not None
        }
        return AgentSettings.model_validate({**base.model_dump(), **over}) if over else base


def data_resource(
    name: str, connector: Connector, settings: DataSettings, linker: SchemaLinker | None = None
) -> DataResource:
    options = Text2SQLOptions(
        max_corrections=settings.max_corrections, row_limit=settings.row_limit, timeout_s=settings.timeout_s
    )
    return DataResource(name, connector, chart=chart_payload, render=chart_svg, linker=linker, options=options)


async def agent_team(
    ctx: ChatContext,
    request: AgentRunRequest,
    settings: AgentSettings,
    *,
    knowledge: Any = None,
    memory: LongTermMemory | None = None,
    registry: Registry[AgentSpec] | None = None,
    tool_registry: Registry[Tool] | None = None,
    structured: bool = True,
) -> Team:
    """The team for ``request``; ``structured=False`` keeps its model calls on the free-text path even
    when the model enforces JSON schemas and tool calls."""
    if not request.goal or not request.goal.strip():
        raise InvalidRequestError("the goal is empty", param="goal")
    source = request.datasource or ctx.settings.default_source
    connector = await ctx.sources.connector(source)
    data = data_resource(source, connector, ctx.settings, ctx.linker(source))
    kres = None
    if request.space:
        if knowledge is None:
            raise InvalidRequestError("knowledge is not available here", param="space")
        await knowledge.space(request.space)  # an unknown space is a 404 now, not a failed step later
        kres = KnowledgeResource(request.space, knowledge)
    return build_team(
        ctx.llm,
        request.model or ctx.model,
        TeamResources(request.settings(settings), data, kres),
        agents=request.agents,
        tools=request.tools,
        registry=registry,
        tool_registry=tool_registry,
        memory=memory,
        structured=structured,
    )


async def agent_events(
    ctx: ChatContext, request: AgentRunRequest, settings: AgentSettings, *, trace: Trace | None = None, **kw: Any
) -> AsyncIterator[dict[str, Any]]:
    team = await agent_team(ctx, request, settings, **kw)
    async for event in team.run(request.goal, plan=request.plan, trace=trace):
        yield event


@register_operator("agent_run")
class AgentRunOperator(BaseOperator):
    """``agent``: the question is a goal for a team of agents over the data source. Emits the run's
    events as the team makes them; ``done`` carries the whole run (report, charts, trace) as its answer.
    On a server the run goes through its agent service (plugins, memory, kept traces)."""

    node_name = "team"
    accepts = (SceneRequest,)
    produces = dict[str, Any]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request: SceneRequest = inputs[0]
        env = ctx.resources
        if not isinstance(env, ChatContext):
            raise ConfigError(f"node {self.name!r} runs in a chat scene: give the flow a ChatContext")
        goal = AgentRunRequest(request.question, request.datasource, space=request.space, model=request.model)
        service = env.agents
        if service is not None:
            run = await service.prepare(goal)
            records: AsyncIterator[dict[str, Any]] = run.records()
        else:
            team = await agent_team(env, goal, AgentSettings(), knowledge=env.knowledge)
            records = team.run(goal.goal, plan=goal.plan)
        result: dict[str, Any] = {}
        done: dict[str, Any] = {}
        async for record in records:
            if record["type"] == "done":
                done = {k: v for k, v in record.items() if k != "type"}
                continue
            if record["type"] == "report":
                result.update(report=record["markdown"], charts=record["charts"])
            ctx.emit(as_event(record))
        if service is not None:
            result = {"run_id": run.run_id, **result, **done, "trace": run.trace.to_dict()}
        else:
            result = {**result, **done}
        # The team's own done record goes out as it was; the whole run rides along as its ``result``.
        ctx.emit(DoneEvent(**done, result=result))
        return result


class _ConnectorOnly:
    """The smallest ``DataSources`` the scene context needs inside a flow: one named connector."""

    def __init__(self, name: str, connector: Connector) -> None:
        self.name, self._connector = name, connector

    async def connector(self, name: str) -> Connector:
        return self._connector


@register_operator("agent_team", "agents")
class AgentOperator(BaseOperator):
    """Runs a team of agents on the input (a goal string, or an object with ``goal``/``question``) over
    a SQLite database named in the flow's resources (or a ``connector`` given in Python); answers
    ``{"ok", "report", "charts", "trace"}``."""

    def __init__(
        self,
        model: str,
        database: str = "sample",
        *,
        agents: list[str] | None = None,
        max_rounds: int | None = None,
        max_tokens: int | None = None,
        connector: Connector | None = None,
        llm: LLMClient | None = None,
        **kw: Any,
    ) -> None:
        self.model, self.database, self.agents = model, database, agents
        self.max_rounds, self.max_tokens = max_rounds, max_tokens
        self.connector, self.llm = connector, llm
        super().__init__(**kw)

    node_name = "agent_team"
    produces = dict

    def requirements(self) -> list[Requirement]:
        reqs = [] if self.llm is not None else [Requirement(self.name, "model", self.model, "chat")]
        if self.connector is None:
            reqs.append(Requirement(self.name, "database", self.database))
        return reqs

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        value = inputs[0]
        goal = (
            value
            if isinstance(value, str)
            else (value.get("goal") or value.get("question") if isinstance(value, dict) else None)
        )
        if not isinstance(goal, str) or not goal.strip():
            raise InvalidRequestError(f"node {self.name!r} needs a goal: a string or an object with 'goal'")
        resources = ctx.resources if isinstance(ctx.resources, FlowResources) else None
        llm = self.llm or (resources.chat_client(self.name) if resources is not None else None)
        if llm is None:
            raise ConfigError(f"node {self.name!r} calls a model but the flow has no LLM client")
        connector, owned = self.connector, False
        if connector is None:
            if resources is None:
                raise ConfigError(f"node {self.name!r} needs a database: pass connector=... or bind FlowResources")
            path = Path(resources.store("database", self.database, self.name))
            connector, owned = SQLAlchemyConnector(sqlite_read_only_url(path)), True
        try:
            scene = ChatContext(llm, self.model, _ConnectorOnly(self.database, connector), DataSettings())  # type: ignore[arg-type]
            run = AgentRunRequest(
                goal, self.database, agents=self.agents, max_rounds=self.max_rounds, max_tokens=self.max_tokens
            )
            team = await agent_team(scene, run, AgentSettings())
            result = await team.result(goal)
        finally:
            if owned:
                await connector.close()
        return {"ok": result.ok, "report": result.report, "charts": result.charts, "trace": result.trace.to_dict()}

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "database": self.database}
        for k in ("agents", "max_rounds", "max_tokens"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out
