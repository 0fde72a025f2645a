"""An agent: a profile, a model (through ``LLMClient``), tools, and memory; and the run it acts in.

``Agent.run`` works one plan step: it shows the model its profile, tools and the step's task, then
loops (at most ``max_turns`` model calls): read the reply as an action (native tool calls when the
client supports them, else the tolerant JSON action format with a bounded number of repair
requests), call the tool, show the observation. A final answer, a spent budget or unreadable replies
end the loop; ``fallback`` then lets an agent finish its job without the model (built-ins use it so
a weak model still gets a result).

``RunContext`` is what every agent of one team run shares: the client, the budget, the trace (every
record also goes to the run's event sink), the workspace of tables, charts, passages and code runs,
and the long-term memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from datapilot.agents._actions import ACTION_FORMAT, Action, parse_action
from datapilot.agents._errors import ActionParseError
from datapilot.agents._memory import LongTermMemory, MemoryHit, ShortTermMemory
from datapilot.agents._tools import Tool, ToolResult
from datapilot.agents._trace import Trace, request_key
from datapilot.core.client import LLMClient
from datapilot.core.config import AgentSettings
from datapilot.core.errors import DataPilotError
from datapilot.core.types import Message, ModelRequest, SamplingParams, Usage
from datapilot.datasource import QueryResult

Event = dict[str, Any]
Sink = Callable[[Event], Awaitable[None]]
MEMORY_K = 3


# --- budget and workspace ---------------------------------------------------------------------------------


@dataclass
class Budget:
    """What one run may spend: review rounds, model calls per step, tokens overall."""

    max_rounds: int
    max_turns: int
    max_tokens: int
    tokens: int = 0
    model_calls: int = 0
    rounds: int = 0

    @classmethod
    def from_settings(cls, s: AgentSettings) -> Budget:
        return cls(s.max_rounds, s.max_turns, s.max_tokens)

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.max_tokens - self.tokens)

    @property
    def exhausted(self) -> bool:
        return self.tokens >= self.max_tokens

    def charge(self, usage: Usage) -> None:
        self.model_calls += 1
        self.tokens += usage.total_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "max_rounds": self.max_rounds,
            "max_turns": self.max_turns,
            "max_tokens": self.max_tokens,
            "rounds": self.rounds,
            "model_calls": self.model_calls,
            "tokens": self.tokens,
        }


@dataclass
class TableArtifact:
    id: str
    title: str
    result: QueryResult
    step: int | None = None

    def preview(self, rows: int = 10) -> str:
        head = "| " + " | ".join(self.result.columns) + " |"
        rule = "|" + "---|" * len(self.result.columns)
        body = ["| " + " | ".join(str(v) for v in r) + " |" for r in self.result.to_dict()["rows"][:rows]]
        more = [f"\n({len(self.result.rows) - rows} more rows)"] if len(self.result.rows) > rows else []
        return "\n".join([head, rule, *body, *more])


@dataclass
class ChartArtifact:
    id: str
    title: str
    table_id: str
    chart: dict[str, Any]  # {"spec": ..., "vega_lite": ...}
    svg: str | None = None
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "table": self.table_id,
            **self.chart,
            "svg": self.svg,
            "file": f"{self.id}.svg",
        }


@dataclass
class Workspace:
    """What the agents of a run produced, shared between steps."""

    tables: dict[str, TableArtifact] = field(default_factory=dict)
    charts: list[ChartArtifact] = field(default_factory=list)
    passages: list[dict[str, Any]] = field(default_factory=list)  # numbered citations
    code_runs: list[dict[str, Any]] = field(default_factory=list)
    report: str | None = None

    def add_table(self, title: str, result: QueryResult, step: int | None) -> TableArtifact:
        table = TableArtifact(f"t{len(self.tables) + 1}", title, result, step)
        self.tables[table.id] = table
        return table

    def latest_table(self) -> TableArtifact | None:
        return list(self.tables.values())[-1] if self.tables else None


# --- native tool calling ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(slots=True)
class ToolReply:
    text: str
    calls: list[ToolCall]
    usage: Usage


@runtime_checkable
class ToolCaller(Protocol):
    """A client whose backend speaks OpenAI's ``tools`` interface: agents then use it instead of the
    JSON action format. ``messages`` are OpenAI chat messages (with ``tool_calls``/``tool`` turns)."""

    async def chat_with_tools(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]], params: SamplingParams
    ) -> ToolReply: ...


# --- the run context ----------------------------------------------------------------------------------------


@dataclass
class RunContext:
    llm: LLMClient
    model: str
    settings: AgentSettings
    trace: Trace
    budget: Budget
    workspace: Workspace = field(default_factory=Workspace)
    memory: LongTermMemory | None = None
    sink: Sink | None = None
    native_tools: bool = True

    async def emit(self, record: Event) -> Event:
        stamped = self.trace.add(record)
        if self.sink is not None:
            await self.sink(stamped)
        return stamped

    def params(self, max_tokens: int | None = None) -> SamplingParams:
        room = min(max_tokens or self.settings.max_reply_tokens, self.settings.max_reply_tokens)
        return SamplingParams(
            max_tokens=max(1, min(room, self.budget.remaining_tokens)), temperature=self.settings.temperature
        )

    async def complete(
        self, agent: str, step: int | None, messages: list[Message], max_tokens: int | None = None
    ) -> str | None:
        """One model call, charged to the budget and recorded; ``None`` when the model failed (recorded)."""
        request = ModelRequest(model=self.model, messages=list(messages), params=self.params(max_tokens))
        try:
            out = await self.llm.generate(request)
        except DataPilotError as exc:
            await self.emit({"type": "error", "step": step, "agent": agent, "error": exc.to_dict()["error"]})
            return None
        self.budget.charge(out.usage)
        await self.emit(
            {
                "type": "message",
                "step": step,
                "agent": agent,
                "role": "assistant",
                "content": out.text,
                "key": request_key(request),
                "usage": out.usage.to_dict(),
            }
        )
        return out.text

    async def remember(self, query: str, agent: str) -> list[MemoryHit]:
        if self.memory is None:
            return []
        try:
            return await self.memory.search(query, MEMORY_K)
        except Exception as exc:  # memory helps; it never stops a run
            await self.emit({"type": "note", "agent": agent, "note": f"memory search failed: {exc}"})
            return []


# --- agents --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentProfile:
    name: str
    role: str
    goal: str = ""
    constraints: tuple[str, ...] = ()

    def describe(self) -> str:
        lines = [f"You are {self.name}, {self.role}."]
        if self.goal:
            lines.append(f"Your goal: {self.goal}")
        lines += [f"- {c}" for c in self.constraints]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "goal": self.goal, "constraints": list(self.constraints)}


@dataclass
class Task:
    """One step of a plan as an agent sees it."""

    id: int
    agent: str
    task: str
    depends_on: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "task": self.task, "depends_on": self.depends_on}


@dataclass
class StepOutcome:
    step: int
    agent: str
    ok: bool = False
    text: str = ""
    results: list[ToolResult] = field(default_factory=list)
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.text:
            return self.text
        good = [r for r in self.results if r.ok]
        if good:
            return good[-1].observation
        return "; ".join(self.notes) or "no result"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "agent": self.agent,
            "ok": self.ok,
            "summary": self.summary(),
            "fallback": self.fallback,
            "notes": self.notes,
            "artifacts": self.artifacts,
        }


class Agent:
    """A model-driven worker. Subclasses add resource tools (``tools_for``), examples for the prompt,
    a judgement of success (``judge``) and a model-free way to finish (``fallback``)."""

    examples: str = ""

    def __init__(self, profile: AgentProfile, tools: Iterable[Tool] = (), *, description: str = "") -> None:
        self.profile = profile
        self.tools = list(tools)
        self.description = description or profile.role

    @property
    def name(self) -> str:
        return self.profile.name

    def tools_for(self, ctx: RunContext, task: Task) -> list[Tool]:
        return list(self.tools)

    def system_prompt(self, tools: list[Tool], memories: list[MemoryHit]) -> str:
        parts = [self.profile.describe()]
        if tools:
            parts.append("Tools:\n" + "\n".join(f"- {t.signature_line()}" for t in tools))
        if memories:
            parts.append("Relevant past findings:\n" + "\n".join(f"- {m.text}" for m in memories))
        parts.append(ACTION_FORMAT)
        if self.examples:
            parts.append("Example:\n" + self.examples)
        return "\n\n".join(parts)

    def user_prompt(self, task: Task, context: str) -> str:
        return f"Task: {task.task}" + (f"\n\nWhat the team found so far:\n{context}" if context else "")

    async def run(self, task: Task, ctx: RunContext, context: str = "") -> StepOutcome:
        tools = self.tools_for(ctx, task)
        outcome = StepOutcome(task.id, self.name)
        memories = await ctx.remember(task.task, self.name)
        caller = ctx.llm if ctx.native_tools and isinstance(ctx.llm, ToolCaller) and tools else None
        system, user = self.system_prompt(tools, memories), self.user_prompt(task, context)
        if caller is not None:
            system = system.replace(ACTION_FORMAT, "Use the tools; answer in plain text when you are done.")
        for role, content in (("system", system), ("user", user)):
            await ctx.emit({"type": "message", "step": task.id, "agent": self.name, "role": role, "content": content})
        if caller is not None:
            await self._native_loop(caller, task, ctx, tools, system, user, outcome)
        else:
            await self._text_loop(task, ctx, tools, system, user, outcome)
        outcome = await self.fallback(task, ctx, outcome)
        outcome.ok = self.judge(outcome, ctx)
        return outcome

    async def _text_loop(
        self, task: Task, ctx: RunContext, tools: list[Tool], system: str, user: str, outcome: StepOutcome
    ) -> None:
        memory = ShortTermMemory()
        memory.add("system", system)
        memory.add("user", user)
        by_name = {t.name: t for t in tools}
        retries = 0
        for _ in range(ctx.budget.max_turns):
            if ctx.budget.exhausted:
                outcome.notes.append("the token budget is spent")
                await ctx.emit({"type": "budget", "step": task.id, "agent": self.name, **ctx.budget.to_dict()})
                return
            reply = await ctx.complete(self.name, task.id, memory.window())
            if reply is None:
                outcome.notes.append("the model failed")
                return
            memory.add("assistant", reply)
            try:
                action = parse_action(reply)
            except ActionParseError as exc:
                if retries < ctx.settings.max_parse_retries:
                    retries += 1
                    fix = f"Your reply could not be read: {exc}. {ACTION_FORMAT}"
                    memory.add("user", fix)
                    await ctx.emit(
                        {
                            "type": "message",
                            "step": task.id,
                            "agent": self.name,
                            "role": "user",
                            "content": fix,
                            "repair": retries,
                        }
                    )
                    continue
                note = f"no readable action after {retries} repair request(s): {exc}"
                outcome.notes.append(note)
                await ctx.emit({"type": "observation", "step": task.id, "agent": self.name, "content": note})
                return
            if action.final is not None:
                outcome.text = action.final.strip()
                return
            result = await self._call(task, ctx, by_name, action)
            outcome.results.append(result)
            memory.add("user", f"Observation from {result.tool}: {result.observation}\nNext action?")

    async def _call(self, task: Task, ctx: RunContext, by_name: dict[str, Tool], action: Action) -> ToolResult:
        name = action.tool or ""
        await ctx.emit(
            {
                "type": "tool_call",
                "step": task.id,
                "agent": self.name,
                "tool": name,
                "args": action.args,
                "thought": action.thought,
                "repaired": action.repaired,
            }
        )
        tool = by_name.get(name)
        if tool is None:
            known = ", ".join(by_name) or "none"
            result = ToolResult(name, False, f"unknown tool {name!r}; tools: {known}", error="unknown_tool")
        else:
            result = await tool.call(action.args)
        await ctx.emit({"type": "tool_result", "step": task.id, "agent": self.name, **result.to_dict()})
        return result

    async def _native_loop(
        self,
        caller: ToolCaller,
        task: Task,
        ctx: RunContext,
        tools: list[Tool],
        system: str,
        user: str,
        outcome: StepOutcome,
    ) -> None:
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        specs = [t.openai_spec() for t in tools]
        by_name = {t.name: t for t in tools}
        for _ in range(ctx.budget.max_turns):
            if ctx.budget.exhausted:
                outcome.notes.append("the token budget is spent")
                await ctx.emit({"type": "budget", "step": task.id, "agent": self.name, **ctx.budget.to_dict()})
                return
            try:
                reply = await caller.chat_with_tools(ctx.model, messages, specs, ctx.params())
            except DataPilotError as exc:
                await ctx.emit({"type": "error", "step": task.id, "agent": self.name, "error": exc.to_dict()["error"]})
                outcome.notes.append("the model failed")
                return
            ctx.budget.charge(reply.usage)
            calls = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.calls
            ]
            await ctx.emit(
                {
                    "type": "message",
                    "step": task.id,
                    "agent": self.name,
                    "role": "assistant",
                    "content": reply.text,
                    "tool_calls": calls,
                    "usage": reply.usage.to_dict(),
                }
            )
            if not reply.calls:
                outcome.text = reply.text.strip()
                return
            messages.append({"role": "assistant", "content": reply.text or None, "tool_calls": calls})
            for call in reply.calls:
                result = await self._call(task, ctx, by_name, Action(tool=call.name, args=call.arguments))
                outcome.results.append(result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.observation})

    async def fallback(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
        return outcome

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return bool(outcome.text) or any(r.ok for r in outcome.results)

    def to_dict(self) -> dict[str, Any]:
        return {**self.profile.to_dict(), "description": self.description, "tools": [t.name for t in self.tools]}
