"""A team: a planner breaks the goal into steps for its agents, the steps run in order (independent
ones at the same time), a reviewer checks the results against the goal and may send failed steps
back, within the run's budget of rounds and tokens. The report writer's markdown is the answer.

When the model enforces JSON schemas and tool calls (its ``capabilities``), the planner and reviewer
ask through a schema and the agents through ``tools``; ``structured=False`` keeps every call on the
tolerant free-text path. The ``start`` record lists the capabilities the run used.

``Team.run`` streams the run's trace records as they happen; ``Team.result`` runs to the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from datapilot.agents._agent import Agent, Budget, Event, RunContext, StepOutcome, Task
from datapilot.agents._builtin import (
    AGENTS,
    TOOLS,
    AgentSpec,
    Plan,
    PlannerAgent,
    ReviewerAgent,
    TeamResources,
    compose_report,
    default_summary,
    parse_plan,
)
from datapilot.agents._memory import LongTermMemory
from datapilot.agents._tools import Tool
from datapilot.agents._trace import Trace
from datapilot.core.client import LLMClient
from datapilot.core.config import AgentSettings
from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.core.registry import Registry

_END = object()
SUMMARY_CHARS = 600


@dataclass
class RunResult:
    ok: bool
    report: str
    charts: list[dict[str, Any]]
    trace: Trace
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "report": self.report,
            "charts": self.charts,
            "outcomes": self.outcomes,
            "trace": self.trace.to_dict(),
        }


class Team:
    def __init__(
        self,
        llm: LLMClient,
        model: str,
        members: dict[str, Agent],
        *,
        settings: AgentSettings | None = None,
        planner: PlannerAgent | None = None,
        reviewer: ReviewerAgent | None = None,
        memory: LongTermMemory | None = None,
        native_tools: bool = True,
        structured: bool = True,
    ) -> None:
        if not members:
            raise InvalidRequestError("a team needs at least one agent", param="agents")
        self.llm, self.model, self.members = llm, model, members
        self.settings = settings or AgentSettings()
        self.planner = planner or PlannerAgent()
        self.reviewer = reviewer or ReviewerAgent()
        self.memory = memory
        self.native_tools = native_tools
        self.structured = structured

    async def run(
        self, goal: str, *, plan: list[dict[str, Any]] | str | None = None, trace: Trace | None = None
    ) -> AsyncIterator[Event]:
        """The run's records as they happen; ``plan`` (steps as the planner writes them) skips planning;
        ``trace`` is filled as the run goes (a fresh one by default)."""
        if not goal or not goal.strip():
            raise InvalidRequestError("the goal is empty", param="goal")
        given = parse_plan(plan) if isinstance(plan, str) else plan
        queue: asyncio.Queue[Any] = asyncio.Queue()
        ctx = RunContext(
            self.llm,
            self.model,
            self.settings,
            trace or Trace(goal.strip()),
            Budget.from_settings(self.settings),
            memory=self.memory,
            sink=queue.put,
            native_tools=self.native_tools,
            structured=self.structured,
        )

        async def main() -> None:
            try:
                await self._execute(ctx, given)
            except Exception as exc:
                error = (
                    exc.to_dict()["error"]
                    if isinstance(exc, DataPilotError)
                    else {
                        "message": f"internal error ({type(exc).__name__}: {exc})",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                )
                await ctx.emit({"type": "error", "error": error})
                await ctx.emit({"type": "done", "ok": False, **ctx.budget.to_dict(), "answer": None})
            finally:
                await queue.put(_END)

        task = asyncio.create_task(main())
        try:
            while (item := await queue.get()) is not _END:
                yield item
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def result(self, goal: str, *, plan: list[dict[str, Any]] | str | None = None) -> RunResult:
        report, charts, ok, outcomes = "", [], False, []
        trace = Trace(goal.strip())
        async for event in self.run(goal, plan=plan, trace=trace):
            if event["type"] == "report":
                report, charts = event["markdown"], event["charts"]
            elif event["type"] == "done":
                ok = bool(event["ok"])
            elif event["type"] == "step_done":
                outcomes.append(event)
        return RunResult(ok, report, charts, trace, outcomes)

    async def _execute(self, ctx: RunContext, given: list[dict[str, Any]] | None) -> None:
        goal = ctx.trace.goal
        await ctx.emit(
            {
                "type": "start",
                "goal": goal,
                "model": self.model,
                "agents": list(self.members),
                "budget": ctx.budget.to_dict(),
                "capabilities": sorted(await ctx.capabilities()),
            }
        )
        if given is not None:
            notes: list[str] = []
            steps = self.planner._validated(
                [
                    {
                        "agent": str(s.get("agent", "")).lower(),
                        "task": str(s.get("task", "")),
                        "after": list(s.get("after", s.get("depends_on", []))),
                    }
                    for s in given
                ],
                self.members,
                notes,
                self.settings.max_steps,
            )
            if not steps:
                raise InvalidRequestError("the given plan has no step for an agent on the team", param="plan")
            plan = Plan(steps, "given", notes)
        else:
            plan = await self.planner.plan(goal, ctx, self.members)
        steps = plan.steps
        await ctx.emit({"type": "plan", **plan.to_dict()})
        outcomes: dict[int, StepOutcome] = {}
        todo = list(steps)
        review_notes = ""
        for round_ in range(1, ctx.budget.max_rounds + 1):
            ctx.budget.rounds = round_
            await self._run_steps(todo, steps, ctx, outcomes, review_notes)
            review = await self.reviewer.review(goal, steps, outcomes, ctx, round_)
            await ctx.emit({"type": "review", **review.to_dict(), "budget": ctx.budget.to_dict()})
            if review.approved or round_ == ctx.budget.max_rounds or not review.redo:
                break
            again = _with_dependents(set(review.redo), steps)
            todo = [t for t in steps if t.id in again]
            review_notes = review.notes
        report = ctx.workspace.report or compose_report(ctx, default_summary(ctx))
        charts = [c.to_dict() for c in ctx.workspace.charts]
        await ctx.emit({"type": "report", "markdown": report, "charts": charts})
        await self._remember(ctx, steps, outcomes)
        ok = all(o.ok for o in outcomes.values()) and len(outcomes) == len(steps)
        await ctx.emit(
            {
                "type": "done",
                "ok": ok,
                **ctx.budget.to_dict(),
                "answer": {
                    "goal": goal,
                    "report": report,
                    "charts": [c["id"] for c in charts],
                    "steps": [o.to_dict() for o in outcomes.values()],
                },
            }
        )

    async def _run_steps(
        self, todo: list[Task], steps: list[Task], ctx: RunContext, outcomes: dict[int, StepOutcome], notes: str
    ) -> None:
        pending = list(todo)
        waiting = {t.id for t in todo}
        while pending:
            ready = [t for t in pending if not any(d in waiting for d in t.depends_on)]
            if not ready:  # a cycle: what is left cannot start
                for t in pending:
                    outcomes[t.id] = StepOutcome(t.id, t.agent, notes=["its dependencies form a cycle"])
                    await ctx.emit({"type": "step_done", "step": t.id, "agent": t.agent, **outcomes[t.id].to_dict()})
                return
            batch = ready if self.settings.parallel else ready[:1]
            done = await asyncio.gather(*(self._run_step(t, ctx, outcomes, notes) for t in batch))
            for t, outcome in zip(batch, done, strict=True):
                outcomes[t.id] = outcome
                waiting.discard(t.id)
                pending.remove(t)

    async def _run_step(self, task: Task, ctx: RunContext, outcomes: dict[int, StepOutcome], notes: str) -> StepOutcome:
        agent = self.members[task.agent]
        await ctx.emit(
            {
                "type": "step_start",
                "step": task.id,
                "agent": task.agent,
                "task": task.task,
                "depends_on": task.depends_on,
                "round": ctx.budget.rounds,
            }
        )
        context = "\n".join(
            f"- step {d} ({outcomes[d].agent}): {outcomes[d].summary()[:SUMMARY_CHARS]}"
            for d in task.depends_on
            if d in outcomes
        )
        if notes:
            context += f"\n- reviewer: {notes}"
        try:
            outcome = await agent.run(task, ctx, context.strip())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one agent's crash is a failed step, never a failed run
            message = exc.message if isinstance(exc, DataPilotError) else f"{type(exc).__name__}: {exc}"
            outcome = StepOutcome(task.id, task.agent, notes=[f"the agent failed: {message}"])
        await ctx.emit({"type": "step_done", **outcome.to_dict()})
        return outcome

    async def _remember(self, ctx: RunContext, steps: list[Task], outcomes: dict[int, StepOutcome]) -> None:
        if self.memory is None:
            return
        facts = [
            f"{ctx.trace.goal} -> {o.agent}: {o.summary()[:SUMMARY_CHARS]}"
            for o in outcomes.values()
            if o.ok and o.agent != "reporter"
        ]
        try:
            await self.memory.add(facts, [{"run_id": ctx.trace.run_id, "goal": ctx.trace.goal}] * len(facts))
        except Exception as exc:
            await ctx.emit({"type": "note", "note": f"could not store the run in memory: {exc}"})


def _with_dependents(ids: set[int], steps: list[Task]) -> set[int]:
    out = set(ids)
    changed = True
    while changed:
        changed = False
        for t in steps:
            if t.id not in out and any(d in out for d in t.depends_on):
                out.add(t.id)
                changed = True
    return out


def build_team(
    llm: LLMClient,
    model: str,
    resources: TeamResources,
    *,
    agents: Iterable[str] | None = None,
    tools: Iterable[str] = (),
    registry: Registry[AgentSpec] | None = None,
    tool_registry: Registry[Tool] | None = None,
    memory: LongTermMemory | None = None,
    native_tools: bool = True,
    structured: bool = True,
) -> Team:
    """A team of agents named in ``registry`` (default: every one the resources allow), each given
    the extra ``tools`` named in ``tool_registry``. Unknown names are refused, never imported."""
    registry = registry if registry is not None else AGENTS
    tool_registry = tool_registry if tool_registry is not None else TOOLS
    extra = [tool_registry.get(name) for name in tools]
    names = list(agents) if agents is not None else registry.names()
    members: dict[str, Agent] = {}
    for name in names:
        spec = registry.get(name)
        agent = spec.factory(
            TeamResources(
                resources.settings, resources.data, resources.knowledge, resources.code, [*resources.tools, *extra]
            )
        )
        if agent is None:
            if agents is not None:
                raise InvalidRequestError(
                    f"agent {name!r} needs a resource this run lacks (a data source or a knowledge space)",
                    param="agents",
                )
            continue
        if extra and name not in ("reporter",):
            agent.tools = [*agent.tools, *extra]
        members[name] = agent
    if "reporter" not in members and "reporter" in registry:
        reporter = registry.get("reporter").factory(resources)
        if reporter is not None:
            members["reporter"] = reporter
    return Team(
        llm,
        model,
        members,
        settings=resources.settings,
        memory=memory,
        native_tools=native_tools,
        structured=structured,
    )
