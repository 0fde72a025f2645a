"""An agent: a profile, a model (through ``LLMClient``), tools, and memory; and the run it acts in.

``Agent.run`` works one plan step: it shows the model its profile, tools and the step's task, then
loops (at most ``max_turns`` model calls): read the reply as an action, call the tool, show the
observation. When the model lists ``tools`` in its capabilities the request carries the tools' JSON
schemas and the calls come back as ``ModelOutput.tool_calls`` (``tool_choice`` is ``required`` until
the step has what it needs, so a constrained model always answers with a readable call); otherwise
the tolerant JSON action format is read, with a bounded number of repair requests. A final answer, a
spent budget or unreadable replies end the loop; ``fallback`` then lets an agent finish its job
without the model (built-ins use it so a weak model still gets a result), and the step's record says
which path was used and why a fallback was still needed (``fallback_reason``).

``RunContext`` is what every agent of one team run shares: the client, the budget, the trace (every
record also goes to the run's event sink), the workspace of tables, charts, passages and code runs,
and the long-term memory.
"""

from __future__ import annotations

import copy
import json
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
from datapilot.core.errors import ContextLengthExceededError, DataPilotError
from datapilot.core.types import (
    Message,
    ModelOutput,
    ModelRequest,
    ResponseFormat,
    SamplingParams,
    ToolSpec,
    Usage,
)
from datapilot.datasource import QueryResult

Event = dict[str, Any]
Sink = Callable[[Event], Awaitable[None]]
MEMORY_K = 3
# Model capabilities (as ``ModelInfo.capabilities`` names them) the agents use when a model has them.
JSON_SCHEMA = "json_schema"
TOOLS = "tools"
TOOL_REPLY_TOKENS = 512  # a constrained call cut short is useless: room for a long SQL query


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
    """A client that speaks OpenAI's ``tools`` interface even when its ``models()`` cannot say so:
    agents then send ``ModelRequest.tools`` through its ``generate``. ``messages`` are OpenAI chat
    messages (with ``tool_calls``/``tool`` turns)."""

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
    structured: bool = True  # False: the free-text path even when the model enforces schemas and tools
    _capabilities: frozenset[str] | None = field(default=None, repr=False)

    async def emit(self, record: Event) -> Event:
        stamped = self.trace.add(record)
        if self.sink is not None:
            await self.sink(stamped)
        return stamped

    async def capabilities(self) -> frozenset[str]:
        """What of ``json_schema`` and ``tools`` the agents may ask this model for (asked once)."""
        if self._capabilities is None:
            caps: set[str] = set()
            if self.structured:
                try:
                    infos = await self.llm.models()
                except Exception:  # a client that cannot list its models gets the free-text path
                    infos = []
                info = next((m for m in infos if m.name == self.model), None)
                caps = set(info.capabilities & {JSON_SCHEMA, TOOLS}) if info is not None else set()
                if isinstance(self.llm, ToolCaller):
                    caps.add(TOOLS)
            if not self.native_tools:
                caps.discard(TOOLS)
            self._capabilities = frozenset(caps)
        return self._capabilities

    def params(self, max_tokens: int | None = None, *, structured: bool = False) -> SamplingParams:
        """Sampling for one call; a structured answer may pass ``max_reply_tokens`` (JSON cut short is
        worth nothing, and its schema bounds its length), never the budget."""
        room = max_tokens or self.settings.max_reply_tokens
        if not structured:
            room = min(room, self.settings.max_reply_tokens)
        return SamplingParams(
            max_tokens=max(1, min(room, self.budget.remaining_tokens)), temperature=self.settings.temperature
        )

    async def complete(
        self, agent: str, step: int | None, messages: list[Message], max_tokens: int | None = None
    ) -> str | None:
        """One model call, charged to the budget and recorded; ``None`` when the model failed (recorded)."""
        out = await self.ask(agent, step, messages, max_tokens)
        return None if out is None else out.text

    async def ask(
        self,
        agent: str,
        step: int | None,
        messages: list[Message],
        max_tokens: int | None = None,
        *,
        response_format: ResponseFormat | None = None,
        tools: list[ToolSpec] | None = None,
        tool_choice: str = "auto",
        parallel: bool = True,
    ) -> ModelOutput | None:
        """Like ``complete``, with the whole output: constrained by ``response_format`` or offered
        ``tools``. The record says which (``structured``), how the answer ended and the calls made."""
        structured = JSON_SCHEMA if response_format is not None else TOOLS if tools else None
        request = ModelRequest(
            model=self.model,
            messages=list(messages),
            params=self.params(max_tokens, structured=structured is not None),
            response_format=response_format,
            tools=list(tools or []),
            tool_choice=tool_choice if tools else "auto",
            parallel_tool_calls=parallel,
        )
        try:
            try:
                out = await self.llm.generate(request)
            except ContextLengthExceededError:
                # The generous room of a structured answer did not fit the context: the usual room does.
                if (request.params.max_tokens or 0) <= self.settings.max_reply_tokens:
                    raise
                request.params.max_tokens = self.params(None).max_tokens
                await self.emit(
                    {
                        "type": "note",
                        "step": step,
                        "agent": agent,
                        "note": f"the context is short: asking again with max_tokens {request.params.max_tokens}",
                    }
                )
                out = await self.llm.generate(request)
        except DataPilotError as exc:
            await self.emit({"type": "error", "step": step, "agent": agent, "error": exc.to_dict()["error"]})
            return None
        self.budget.charge(out.usage)
        record: Event = {
            "type": "message",
            "step": step,
            "agent": agent,
            "role": "assistant",
            "content": out.text,
            "key": request_key(request),
            "usage": out.usage.to_dict(),
            "finish_reason": out.finish_reason,
        }
        if structured is not None:
            record["structured"] = structured
        if out.tool_calls:
            record["tool_calls"] = [c.to_dict() for c in out.tool_calls]
        await self.emit(record)
        return out

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

    def to_plan(self) -> dict[str, Any]:
        """The step as a planner writes it (``plan_schema``)."""
        return {"agent": self.agent, "task": self.task, **({"after": self.depends_on} if self.depends_on else {})}


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
    structured: bool = False  # the model was asked through tools / a JSON schema
    fallback_reason: str | None = None  # why the fallback was needed (see ``Agent.trouble``)
    trouble: str | None = field(default=None, repr=False)  # what went wrong with the model, as it happened

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
            "fallback_reason": self.fallback_reason if self.fallback else None,
            "structured": self.structured,
            "notes": self.notes,
            "artifacts": self.artifacts,
        }


class Agent:
    """A model-driven worker. Subclasses add resource tools (``tools_for``), examples for the prompt,
    what counts as having done the step (``has_result``), a judgement of success (``judge``) and a
    model-free way to finish (``fallback``)."""

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

    def system_prompt(self, tools: list[Tool], memories: list[MemoryHit], *, native: bool = False) -> str:
        """The profile, then (free-text path) the tools and the JSON action format with an example;
        with native tools the request itself describes them, so only a hint."""
        parts = [self.profile.describe()]
        if tools and not native:
            parts.append("Tools:\n" + "\n".join(f"- {t.signature_line()}" for t in tools))
        if memories:
            parts.append("Relevant past findings:\n" + "\n".join(f"- {m.text}" for m in memories))
        if native:
            # No example call: a small model copies it whatever the task (the request shows the tools).
            parts.append(NATIVE_HINT)
        else:
            parts.append(ACTION_FORMAT)
            if self.examples:
                parts.append("Example:\n" + self.examples)
        return "\n\n".join(parts)

    def user_prompt(self, task: Task, context: str) -> str:
        """What the team found, then the task: the last thing a model reads is what it must do."""
        return (f"What the team found so far:\n{context}\n\n" if context else "") + f"Task: {task.task}"

    def has_result(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> bool:
        """Whether the step already has what its job needs: until then a model that takes ``tools``
        must call one (``tool_choice`` required), after that it may answer in text."""
        return any(r.ok for r in outcome.results)

    async def run(self, task: Task, ctx: RunContext, context: str = "") -> StepOutcome:
        tools = self.tools_for(ctx, task)
        outcome = StepOutcome(task.id, self.name)
        memories = await ctx.remember(task.task, self.name)
        native = bool(tools) and TOOLS in await ctx.capabilities()
        system, user = self.system_prompt(tools, memories, native=native), self.user_prompt(task, context)
        for role, content in (("system", system), ("user", user)):
            await ctx.emit({"type": "message", "step": task.id, "agent": self.name, "role": role, "content": content})
        outcome.structured = native
        if native:
            await self._tools_loop(task, ctx, tools, system, user, outcome)
        else:
            await self._text_loop(task, ctx, tools, system, user, outcome)
        trouble = self.trouble(task, ctx, outcome)  # before the fallback adds its own results
        outcome = await self.fallback(task, ctx, outcome)
        if outcome.fallback and not outcome.fallback_reason:
            outcome.fallback_reason = trouble
        outcome.ok = self.judge(outcome, ctx)
        return outcome

    def trouble(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> str:
        """Why the model's part of the step fell short: ``unreadable`` or ``length`` (the reply could
        not be read, or was cut at max_tokens), ``budget``, ``model_failed``, ``no_call`` (it answered
        without using a tool), ``tool_failed`` (every call failed: bad SQL, unknown tool, bad
        arguments) or ``no_result`` (calls worked but did not give what the job needs)."""
        if outcome.trouble:
            return outcome.trouble
        if not outcome.results:
            return "no_call"
        if not any(r.ok for r in outcome.results):
            return "tool_failed"
        return "no_result"

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
                await self._spent(task, ctx, outcome)
                return
            out = await ctx.ask(self.name, task.id, memory.window())
            if out is None:
                outcome.notes.append("the model failed")
                outcome.trouble = "model_failed"
                return
            reply = out.text
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
                outcome.trouble = "length" if out.finish_reason == "length" else "unreadable"
                await ctx.emit({"type": "observation", "step": task.id, "agent": self.name, "content": note})
                return
            if action.final is not None:
                outcome.text = action.final.strip()
                return
            result = await self._call(task, ctx, by_name, action)
            outcome.results.append(result)
            memory.add("user", f"Observation from {result.tool}: {result.observation}\nNext action?")

    async def _spent(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> None:
        outcome.notes.append("the token budget is spent")
        outcome.trouble = outcome.trouble or "budget"
        await ctx.emit({"type": "budget", "step": task.id, "agent": self.name, **ctx.budget.to_dict()})

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

    async def _tools_loop(
        self, task: Task, ctx: RunContext, tools: list[Tool], system: str, user: str, outcome: StepOutcome
    ) -> None:
        """Native tool calls: the model is offered the tools' JSON schemas and answers with calls
        (required until the step has its result) or, once it may, with text."""
        by_name = {t.name: t for t in tools}
        messages = [Message("system", system), Message("user", user)]
        done: list[tuple[str, str]] = []  # calls that worked: (name, arguments as canonical JSON)
        for _ in range(ctx.budget.max_turns):
            if ctx.budget.exhausted:
                await self._spent(task, ctx, outcome)
                return
            # A tool without arguments that has answered would only answer the same again.
            offered = [t for t in tools if t.parameters().get("properties") or (t.name, "{}") not in done]
            specs = [tool_spec(t) for t in offered or tools]
            choice = "auto" if self.has_result(task, ctx, outcome) else "required"
            out = await ctx.ask(
                self.name, task.id, messages, TOOL_REPLY_TOKENS, tools=specs, tool_choice=choice, parallel=False
            )
            if out is None:
                outcome.notes.append("the model failed")
                outcome.trouble = "model_failed"
                return
            if out.finish_reason == "length":  # a call cut short has arguments that are not JSON
                note = f"the reply was cut at {TOOL_REPLY_TOKENS} tokens"
                outcome.notes.append(note)
                outcome.trouble = "length"
                await ctx.emit({"type": "observation", "step": task.id, "agent": self.name, "content": note})
                return
            calls = [(c.id, Action(tool=c.name, args=_arguments(c.arguments))) for c in out.tool_calls]
            if not calls:
                action = _text_action(out.text)
                if action.tool is None:
                    outcome.text = (action.final or "").strip()
                    return
                # No call, but a JSON action written as text (a model unaware of its tools): used.
                await ctx.emit(
                    {"type": "note", "step": task.id, "agent": self.name, "note": "read a tool call from the text"}
                )
                calls = [(f"text_{len(outcome.results)}", action)]
                messages.append(Message("assistant", out.text))
            else:
                messages.append(Message("assistant", out.text, tool_calls=tuple(out.tool_calls)))
            for call_id, action in calls:
                key = (action.tool or "", json.dumps(action.args, sort_keys=True, default=str))
                if key in done:  # the same call again: nothing new would come of it
                    note = f"{action.tool} was called again with the same arguments: the step ends here"
                    await ctx.emit({"type": "note", "step": task.id, "agent": self.name, "note": note})
                    return
                result = await self._call(task, ctx, by_name, action)
                outcome.results.append(result)
                if result.ok:
                    done.append(key)
                if call_id.startswith("text_"):
                    messages.append(Message("user", f"Observation from {result.tool}: {result.observation}"))
                else:
                    messages.append(Message("tool", result.observation, name=result.tool, tool_call_id=call_id))

    async def fallback(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
        return outcome

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return bool(outcome.text) or any(r.ok for r in outcome.results)

    def to_dict(self) -> dict[str, Any]:
        return {**self.profile.to_dict(), "description": self.description, "tools": [t.name for t in self.tools]}


NATIVE_HINT = "Call the tools to do the task; when you are done, answer in plain text."


def tool_spec(tool: Tool) -> ToolSpec:
    """A tool as a model is offered it: its JSON schema, with every required string at least one
    character long (a small model held to a schema otherwise answers a question with "")."""
    params = copy.deepcopy(tool.parameters())
    for name in params.get("required", []):
        prop = params.get("properties", {}).get(name)
        if isinstance(prop, dict) and prop.get("type") == "string" and "minLength" not in prop:
            prop["minLength"] = 1
    return ToolSpec(tool.name, tool.description, params)


def _arguments(text: str) -> Any:
    """A call's arguments as the object they encode (the trace shows them so), else the text itself."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text


def _text_action(text: str) -> Action:
    """A text answer where tools were offered: a final answer, unless it is a JSON action."""
    stripped = text.strip()
    if stripped.startswith(("{", "```")):
        try:
            return parse_action(stripped)
        except ActionParseError:
            pass
    return Action(final=stripped)
