"""The built-in agents: planner, data analyst, chart maker, knowledge researcher, code runner, report
writer and reviewer. Each uses the model first and has a model-free way to finish its job, so a
weak model still ends with a report (the trace says which steps fell back, and why).

When the model enforces JSON schemas, the planner asks for its plan under a schema whose agent names
are the team's (``plan_schema``) and the reviewer for its verdict under ``review_schema``: the answer
then always parses, and a fallback is left for answers cut at ``max_tokens`` or plans that break the
team's rules. Other models get the same prompts and the tolerant parsers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from datapilot.agents._agent import (
    JSON_SCHEMA,
    Agent,
    AgentProfile,
    RunContext,
    StepOutcome,
    TableArtifact,
    Task,
)
from datapilot.agents._errors import UnknownAgentError, UnknownToolError
from datapilot.agents._resources import CodeResource, DataResource, KnowledgeResource
from datapilot.agents._sandbox import CodeRunner
from datapilot.agents._tools import Tool, ToolResult
from datapilot.core.config import AgentSettings
from datapilot.core.errors import DataPilotError
from datapilot.core.registry import Registry
from datapilot.core.types import Message, ResponseFormat
from datapilot.text2sql import repair_json

# --- what a team is built from --------------------------------------------------------------------------------


@dataclass
class TeamResources:
    """What agent factories may bind: a data source, a knowledge space, the code runner, extra tools."""

    settings: AgentSettings = field(default_factory=AgentSettings)
    data: DataResource | None = None
    knowledge: KnowledgeResource | None = None
    code: CodeResource | None = None
    tools: list[Tool] = field(default_factory=list)


@dataclass(frozen=True)
class AgentSpec:
    """A named way to make an agent for a team; ``factory`` returns ``None`` when the resources it
    needs are missing (no analyst without a data source)."""

    name: str
    description: str
    factory: Callable[[TeamResources], Agent | None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description}


def chartable(table: TableArtifact) -> bool:
    """Worth a chart: several rows and at least one numeric column."""
    rows = table.result.to_dict()["rows"]
    numeric = any(
        all(isinstance(r[i], int | float) and not isinstance(r[i], bool) for r in rows)
        for i in range(len(table.result.columns))
    )
    return len(rows) >= 2 and numeric


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:,.2f}"


_PERIOD = re.compile(r"^\d{4}([-/]\d{1,2}([-/]\d{1,2})?|[- ]?Q[1-4])?([ T]\d{2}:\d{2}(:\d{2})?)?$")
_TIME_NAME = re.compile(r"(date|time|day|week|month|quarter|year|period)", re.I)


def trend_facts(table: TableArtifact) -> str:
    """What changed along a table's first column, in numbers: first to last value of its last measure,
    the change in percent, the highest and the lowest point. Empty for tables without that shape."""
    rows = table.result.to_dict()["rows"]
    cols = table.result.columns
    if len(rows) < 2 or len(cols) < 2:
        return ""
    measures = [i for i in range(1, len(cols)) if all(_number(r[i]) for r in rows)]
    xs_raw = [r[0] for r in rows]
    dated = all(isinstance(x, str) and _PERIOD.match(x.strip()) for x in xs_raw) or bool(_TIME_NAME.search(cols[0]))
    if not measures or not dated or xs_raw != sorted(xs_raw):
        return ""  # not a series over time: categories have no "change"
    y = measures[-1]
    xs, ys = [str(r[0]) for r in rows], [float(r[y]) for r in rows]
    hi, lo = max(range(len(ys)), key=ys.__getitem__), min(range(len(ys)), key=ys.__getitem__)
    change = f" ({(ys[-1] - ys[0]) / abs(ys[0]):+.0%})" if ys[0] else ""
    return (
        f"{cols[y]} went from {_fmt(ys[0])} ({xs[0]}) to {_fmt(ys[-1])} ({xs[-1]}){change}; "
        f"highest {_fmt(ys[hi])} ({xs[hi]}), lowest {_fmt(ys[lo])} ({xs[lo]})."
    )


# --- data analyst ----------------------------------------------------------------------------------------------


class AnalystAgent(Agent):
    examples = '{"thought": "count orders per status", "tool": "run_sql", "args": {"sql": "SELECT status, COUNT(*) AS n FROM orders GROUP BY status"}}'  # noqa: E501

    def __init__(self, data: DataResource, tools: list[Tool] | None = None) -> None:
        super().__init__(
            AgentProfile(
                "analyst",
                "a data analyst who answers questions with read-only SQL",
                "find the numbers the task asks for",
                ("Only SELECT queries; the data source is read-only.", "Use only the tables and columns listed."),
            ),
            tools or [],
        )
        self.data = data

    def tools_for(self, ctx: RunContext, task: Task) -> list[Tool]:
        return [*self.data.data_tools(ctx, task, self.name), *self.tools]

    async def run(self, task: Task, ctx: RunContext, context: str = "") -> StepOutcome:
        schema = await self.data.schema_text()
        tables = f"Tables of {self.data.name}:\n{schema}"
        return await super().run(task, ctx, tables + (f"\n{context}" if context else ""))

    def _tables(self, ctx: RunContext, task: Task) -> list[str]:
        return [t.id for t in ctx.workspace.tables.values() if t.step == task.id]

    def has_result(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> bool:
        return bool(self._tables(ctx, task))

    async def fallback(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
        if not self._tables(ctx, task):
            outcome.fallback = "text2sql"
            await ctx.emit(
                {
                    "type": "note",
                    "step": task.id,
                    "agent": self.name,
                    "note": "no table yet: asking the text-to-SQL pipeline",
                }
            )
            result = await self._tool(ctx, task, "ask_data", {"question": task.task})
            outcome.results.append(result)
        mine = [ctx.workspace.tables[t] for t in self._tables(ctx, task)]
        if not mine or (outcome.fallback and not any(chartable(t) for t in mine)):
            found = await self.data.profile_query()
            if found is not None:
                outcome.fallback = "profile"
                title, sql = found
                await ctx.emit(
                    {
                        "type": "note",
                        "step": task.id,
                        "agent": self.name,
                        "note": f"no table to chart yet: running an overview query ({title})",
                    }
                )
                outcome.results.append(await self._tool(ctx, task, "run_sql", {"sql": sql, "title": title}))
        outcome.artifacts = self._tables(ctx, task)
        if outcome.fallback and outcome.text:  # a final answer given without data is not a finding
            outcome.notes.append(f"the model said: {outcome.text[:200]}")
            outcome.text = ""
        if outcome.artifacts and not outcome.text:
            table = ctx.workspace.tables[outcome.artifacts[-1]]
            facts = trend_facts(table)
            shape = f"{len(table.result.rows)} row(s), columns {', '.join(table.result.columns)}"
            outcome.text = f"{table.title}: {facts or shape}"
        return outcome

    async def _tool(self, ctx: RunContext, task: Task, name: str, args: dict[str, Any]) -> ToolResult:
        tool = next(t for t in self.tools_for(ctx, task) if t.name == name)
        await ctx.emit(
            {"type": "tool_call", "step": task.id, "agent": self.name, "tool": name, "args": args, "fallback": True}
        )
        result = await tool.call(args)
        await ctx.emit({"type": "tool_result", "step": task.id, "agent": self.name, **result.to_dict()})
        return result

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return bool(outcome.artifacts)


# --- chart maker -------------------------------------------------------------------------------------------------


class ChartAgent(Agent):
    examples = '{"tool": "make_chart", "args": {"table": "t1", "kind": "bar", "title": "Orders per status"}}'

    def __init__(self, data: DataResource) -> None:
        super().__init__(
            AgentProfile("chart", "a chart maker who draws the team's tables", "one clear chart per table that matters")
        )
        self.data = data

    def tools_for(self, ctx: RunContext, task: Task) -> list[Tool]:
        return [*self.data.chart_tools(ctx, task), *self.tools]

    async def run(self, task: Task, ctx: RunContext, context: str = "") -> StepOutcome:
        tables = "\n".join(
            f"- {t.id}: {t.title} (columns {', '.join(t.result.columns)}; {len(t.result.rows)} rows)"
            for t in ctx.workspace.tables.values()
        )
        return await super().run(task, ctx, f"Tables:\n{tables or '(none)'}" + (f"\n{context}" if context else ""))

    def has_result(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> bool:
        return any(c.step == task.id for c in ctx.workspace.charts)

    async def fallback(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
        mine = [c for c in ctx.workspace.charts if c.step == task.id]
        if not mine:
            charted = {c.table_id for c in ctx.workspace.charts}
            tables = [t for t in ctx.workspace.tables.values() if t.id not in charted and t.result.rows]
            wanted = [t for t in tables if chartable(t)] or tables
            for table in wanted[-3:]:
                outcome.fallback = "auto"
                try:
                    mine.append(await self.data.add_chart(ctx, table, None, table.title, task.id))
                except DataPilotError as exc:
                    outcome.notes.append(exc.message)
        outcome.artifacts = [c.id for c in mine]
        if outcome.fallback and outcome.text:
            outcome.notes.append(f"the model said: {outcome.text[:200]}")
            outcome.text = ""
        if mine and not outcome.text:
            outcome.text = ", ".join(f"{c.id}: {c.chart['spec']['kind']} chart of {c.table_id}" for c in mine)
        return outcome

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return bool(outcome.artifacts)


# --- knowledge researcher ---------------------------------------------------------------------------------------


class ResearcherAgent(Agent):
    examples = '{"tool": "search_knowledge", "args": {"query": "refund policy"}}'

    def __init__(self, knowledge: KnowledgeResource) -> None:
        super().__init__(
            AgentProfile(
                "researcher",
                "a knowledge researcher who finds what the documents say",
                "answer from the passages and cite them as [n]",
                ("Cite every claim with its passage number.",),
            )
        )
        self.knowledge = knowledge

    def tools_for(self, ctx: RunContext, task: Task) -> list[Tool]:
        return [*self.knowledge.tools(ctx, task), *self.tools]

    def has_result(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> bool:
        return any(c.get("step") == task.id for c in ctx.workspace.passages)

    async def fallback(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
        mine = [c for c in ctx.workspace.passages if c.get("step") == task.id]
        if not mine:
            outcome.fallback = "search"
            try:
                mine = await self.knowledge.search(ctx, task.task, task.id)
            except DataPilotError as exc:
                outcome.notes.append(exc.message)
            await ctx.emit(
                {
                    "type": "note",
                    "step": task.id,
                    "agent": self.name,
                    "note": f"searched the space with the task itself: {len(mine)} passage(s)",
                }
            )
        outcome.artifacts = [f"[{c['n']}]" for c in mine]
        if mine and not re.search(r"\[\d+\]", outcome.text):
            outcome.text = " ".join(f"[{c['n']}] {' '.join(c['text'].split())[:200]}" for c in mine[:3])
        return outcome

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return bool(outcome.artifacts)


# --- code runner ------------------------------------------------------------------------------------------------

PROFILE_CODE = """import csv, statistics
rows = list(csv.DictReader(open("table.csv")))
print(f"{len(rows)} rows")
for col in (rows[0].keys() if rows else []):
    vals = []
    for r in rows:
        try:
            vals.append(float(r[col]))
        except (TypeError, ValueError):
            pass
    if len(vals) == len(rows) and vals:
        print(f"{col}: min {min(vals):g}, max {max(vals):g}, mean {statistics.fmean(vals):.4g}")
"""


class CoderAgent(Agent):
    examples = '{"tool": "run_python", "args": {"code": "import csv\\nrows = list(csv.DictReader(open(\'table.csv\')))\\nprint(len(rows))"}}'  # noqa: E501

    def __init__(self, code: CodeResource) -> None:
        super().__init__(
            AgentProfile(
                "coder",
                "a Python analyst who computes what SQL cannot",
                "print the numbers the task asks for",
                ("No network; write files only in the current folder.",),
            )
        )
        self.code = code

    def tools_for(self, ctx: RunContext, task: Task) -> list[Tool]:
        return [*self.code.tools(ctx, task), *self.tools]

    async def fallback(self, task: Task, ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
        if not any(r.ok for r in outcome.results) and ctx.workspace.latest_table() is not None:
            outcome.fallback = "profile"
            result = await self.code.run(ctx, PROFILE_CODE, task.id)
            await ctx.emit(
                {
                    "type": "tool_result",
                    "step": task.id,
                    "agent": self.name,
                    "tool": "run_python",
                    "ok": result["ok"],
                    "observation": result["observation"],
                    "data": result["data"],
                    "error": None,
                    "fallback": True,
                }
            )
            outcome.results.append(ToolResult("run_python", result["ok"], result["observation"], result["data"]))
            if result["ok"] and not outcome.text:
                outcome.text = result["data"]["stdout"].strip()
        return outcome


# --- report writer ------------------------------------------------------------------------------------------------


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def usable_text(text: str, limit: int = 1200) -> str:
    """A model's prose kept only when it reads as text: enough letters, not JSON, not a runaway repeat."""
    s = text.strip()
    if s.startswith("{"):
        try:
            obj = json.loads(repair_json(s))
            s = str(obj.get("final") or obj.get("answer") or obj.get("summary") or "") if isinstance(obj, dict) else ""
        except json.JSONDecodeError:
            s = ""
    s = s.strip()[:limit]
    words = s.split()
    if _letters(s) < 20 or (len(words) >= 8 and len(set(words)) < len(words) / 3):
        return ""
    return s


class ReporterAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            AgentProfile(
                "reporter",
                "a report writer",
                "summarise the team's findings for the goal",
                ("Two or three sentences, only facts from the findings.",),
            )
        )

    async def run(self, task: Task, ctx: RunContext, context: str = "") -> StepOutcome:
        outcome = StepOutcome(task.id, self.name)
        summary, why = "", "budget"
        if not ctx.budget.exhausted:
            messages = [
                Message("system", self.profile.describe() + "\n\nReply with the summary only, in plain text."),
                Message("user", f"Goal: {ctx.trace.goal}\n\nFindings:\n{context or '(none)'}\n\nSummary:"),
            ]
            for m in messages:
                await ctx.emit(
                    {"type": "message", "step": task.id, "agent": self.name, "role": m.role, "content": m.content}
                )
            reply = await ctx.complete(self.name, task.id, messages, max_tokens=160)
            summary = usable_text(reply or "")
            why = "model_failed" if reply is None else "unusable"
            if summary and not grounded(summary, f"{ctx.trace.goal}\n{context}\n{_table_words(ctx)}"):
                await ctx.emit(
                    {
                        "type": "note",
                        "step": task.id,
                        "agent": self.name,
                        "note": "the model's summary does not use the findings: summarising them instead",
                    }
                )
                summary, why = "", "ungrounded"
        if not summary:
            outcome.fallback, outcome.fallback_reason = "findings", why
            summary = default_summary(ctx)
        ctx.workspace.report = compose_report(ctx, summary)
        outcome.text = summary
        outcome.ok = True
        outcome.artifacts = ["report"]
        return outcome


_WORD = re.compile(r"[^\W\d_]{4,}")


def grounded(text: str, source: str, share: float = 0.34) -> bool:
    """At least ``share`` of the text's longer words occur in the source (a guard against invention)."""
    words = {w.lower() for w in _WORD.findall(text)}
    known = {w.lower() for w in _WORD.findall(source)}
    return bool(words) and len(words & known) / len(words) >= share


def _table_words(ctx: RunContext) -> str:
    return " ".join(f"{t.title} {' '.join(t.result.columns)} {t.preview()}" for t in ctx.workspace.tables.values())


def shape_of(result: Any) -> str:
    return f"{len(result.rows)} row(s) over {', '.join(result.columns)}."


def default_summary(ctx: RunContext) -> str:
    ws = ctx.workspace
    parts = [
        f"The team gathered {len(ws.tables)} table(s), {len(ws.charts)} chart(s)"
        f" and {len(ws.passages)} cited passage(s) for this goal."
    ]
    for t in list(ws.tables.values())[:3]:
        r = t.result
        if len(r.rows) == 1 and len(r.columns) == 1:
            parts.append(f"{t.title}: {r.columns[0]} = {r.to_dict()['rows'][0][0]}.")
        elif r.rows:
            parts.append(f"{t.title}: {trend_facts(t) or shape_of(r)}")
    return " ".join(parts)


def compose_report(ctx: RunContext, summary: str) -> str:
    """The report in markdown: summary, then per step its tables (SQL and a preview) and charts,
    the cited passages, the code runs, and the run's figures."""
    ws, trace = ctx.workspace, ctx.trace
    lines = [f"# {trace.goal.strip()}", "", summary.strip(), ""]
    # What changed, computed from the tables themselves: true whatever the model wrote above.
    facts = [(t, trend_facts(t)) for t in ws.tables.values()]
    if any(f for _, f in facts):
        lines += ["## Key figures", ""] + [f"- **{t.title}**: {f}" for t, f in facts if f] + [""]
    plan = next((r for r in reversed(trace.records) if r["type"] == "plan"), None)
    steps = {s["id"]: s for s in (plan or {}).get("steps", [])}
    done = {r["step"]: r for r in trace.records if r["type"] == "step_done"}
    charts_by_table: dict[str, list[Any]] = {}
    for c in ws.charts:
        charts_by_table.setdefault(c.table_id, []).append(c)
    lines.append("## Findings")
    for sid, step in steps.items():
        if step["agent"] == "reporter":
            continue
        lines += ["", f"### {sid}. {step['task']} ({step['agent']})"]
        if sid in done:
            lines.append(done[sid]["summary"])
        for t in (t for t in ws.tables.values() if t.step == sid):
            lines += ["", f"**{t.title}** (table {t.id})", "", "```sql", t.result.sql.strip(), "```", "", t.preview()]
            for c in charts_by_table.get(t.id, []):
                lines += ["", f"![{c.title}]({c.id}.svg)"]
        for c in (c for c in ws.charts if c.step == sid and c.table_id not in ws.tables):
            lines += ["", f"![{c.title}]({c.id}.svg)"]
    if ws.passages:
        lines += ["", "## Sources"]
        for p in ws.passages:
            where = ", ".join(
                str(x) for x in (p["source"], f"page {p['page']}" if p.get("page") else None, p.get("section")) if x
            )
            lines.append(f'[{p["n"]}] {where}: "{" ".join(p["text"].split())[:200]}"')
    if ws.code_runs:
        lines += ["", "## Code"]
        for run in ws.code_runs:
            lines += [
                "",
                "```python",
                run["code"].strip(),
                "```",
                "",
                "```text",
                (run["stdout"] or run["stderr"]).strip()[:1500],
                "```",
            ]
    b = ctx.budget
    lines += [
        "",
        "---",
        f"_Run {trace.run_id}: {len(steps)} step(s), round {b.rounds}, {b.model_calls} model call(s), "
        f"{b.tokens} tokens._",
    ]
    return "\n".join(lines) + "\n"


# --- planner and reviewer -------------------------------------------------------------------------------------------

PLAN_FORMAT = (
    'Reply with JSON only: {"steps": [{"agent": "AGENT", "task": "what to do", "after": [STEP NUMBERS IT NEEDS]}]}. '
    "Steps are numbered from 1 in the order given."
)


def _first(obj: dict[str, Any], *keys: str) -> Any:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    return next((lowered[k] for k in keys if lowered.get(k) not in (None, "")), None)


def parse_plan(text: str) -> list[dict[str, Any]]:
    """Plan steps from a model reply: ``{"steps": [...]}``, ``{"plan": [...]}`` or a bare list, repaired
    when malformed; raises ``ValueError`` saying what is wrong."""
    s = (text or "").strip()
    fence = re.search(r"```[A-Za-z]*\n?(.*?)(?:```|$)", s, re.S)
    if fence and ("[" in fence.group(1) or "{" in fence.group(1)):
        s = fence.group(1).strip()
    items: Any = None
    start, brace = s.find("["), s.find("{")
    if start != -1 and (brace == -1 or start < brace):
        try:
            items = json.loads(s[start:])
        except json.JSONDecodeError:
            try:
                items = json.loads(repair_json('{"items": ' + s[start:] + "}")).get("items")
            except json.JSONDecodeError:
                items = None
    elif brace != -1:
        try:
            obj = json.loads(s[brace:])
        except json.JSONDecodeError:
            try:
                obj = json.loads(repair_json(s[brace:]))
            except json.JSONDecodeError:
                obj = None
        if isinstance(obj, dict):
            items = _first(obj, "steps", "plan", "tasks")
    if not isinstance(items, list) or not items:
        raise ValueError("no list of steps found in the reply")
    steps = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ValueError(f"step {i} is not an object")
        agent, task = _first(item, "agent", "assignee", "who", "role"), _first(item, "task", "description", "goal")
        if not isinstance(agent, str) or not isinstance(task, str):
            raise ValueError(f"step {i} needs an agent and a task")
        after = _first(item, "after", "depends_on", "deps", "needs") or []
        after = [after] if isinstance(after, int | str) else after
        deps = [int(d) for d in after if str(d).strip().isdigit()]
        steps.append({"agent": agent.strip().lower(), "task": task.strip(), "after": deps})
    return steps


TASK_CHARS = 240  # a step's task: a sentence, not an essay (bounds what a constrained model writes)
NOTES_CHARS = 200


def plan_schema(members: dict[str, Agent], max_steps: int) -> dict[str, Any]:
    """The JSON schema of a plan for this team: agent names are an enum of its members."""
    step = {
        "type": "object",
        "properties": {
            "agent": {"enum": list(members)},
            "task": {"type": "string", "minLength": 1, "maxLength": TASK_CHARS},
            "after": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": max_steps},
        },
        "required": ["agent", "task"],
    }
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_steps}},
        "required": ["steps"],
    }


def plan_tokens(max_steps: int) -> int:
    """Room for the longest plan ``plan_schema`` admits, with tasks of short words (a TASK_CHARS task
    is about 40 tokens of English; 80 leaves room for other scripts), dependencies and punctuation."""
    return 48 + (TASK_CHARS // 2 + 40) * max_steps


@dataclass
class Plan:
    """The steps of a run and where they came from: ``model``, ``fallback`` (the default plan) or
    ``given``; whether the model was asked under a schema, and why its plan was not used."""

    steps: list[Task]
    source: str
    notes: list[str] = field(default_factory=list)
    structured: bool = False
    fallback_reason: str | None = None  # unreadable, length, invalid, model_failed, budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "notes": self.notes,
            "structured": self.structured,
            "fallback_reason": self.fallback_reason if self.source == "fallback" else None,
            "steps": [t.to_dict() for t in self.steps],
        }


class PlannerAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            AgentProfile(
                "planner",
                "the planner of a team of agents",
                "break the goal into a few steps, each for one agent",
                ("Use only the agents listed.", "End with the reporter."),
            )
        )

    async def plan(self, goal: str, ctx: RunContext, members: dict[str, Agent]) -> Plan:
        """The steps for ``goal`` (the default plan when the model's cannot be used), and why."""
        notes: list[str] = []
        roster = "\n".join(f"- {n}: {a.description}" for n, a in members.items())
        memories = await ctx.remember(goal, self.name)
        system = f"{self.profile.describe()}\n\nAgents:\n{roster}\n\n{PLAN_FORMAT}"
        if memories:
            system += "\n\nRelevant past findings:\n" + "\n".join(f"- {m.text}" for m in memories)
        example = "Example: " + json.dumps({"steps": [t.to_plan() for t in default_plan(goal, members)]})
        messages = [Message("system", system + "\n\n" + example), Message("user", f"Goal: {goal}")]
        for m in messages:
            await ctx.emit({"type": "message", "step": None, "agent": self.name, "role": m.role, "content": m.content})
        fmt = None
        if JSON_SCHEMA in await ctx.capabilities():
            fmt = ResponseFormat("json_schema", plan_schema(members, ctx.settings.max_steps), "plan")
        room = plan_tokens(ctx.settings.max_steps) if fmt is not None else None
        raw: list[dict[str, Any]] | None = None
        reason: str | None = None
        for attempt in range(ctx.settings.max_parse_retries + 1):
            if ctx.budget.exhausted:
                notes.append("the token budget is spent")
                reason = reason or "budget"
                break
            out = await ctx.ask(self.name, None, messages, room, response_format=fmt)
            if out is None:
                notes.append("the model failed")
                reason = "model_failed"
                break
            reply = out.text
            try:
                raw = parse_plan(reply)
                if out.finish_reason == "length":
                    notes.append(f"the plan was cut at {out.usage.completion_tokens} tokens: its readable steps kept")
                break
            except ValueError as exc:
                reason = "length" if out.finish_reason == "length" else "unreadable"
                cut = f" (cut at {out.usage.completion_tokens} tokens)" if reason == "length" else ""
                notes.append(f"unreadable plan{cut}: {exc}")
                if attempt < ctx.settings.max_parse_retries:
                    fix = f"That plan could not be read: {exc}. {PLAN_FORMAT}"
                    messages += [Message("assistant", reply), Message("user", fix)]
                    await ctx.emit(
                        {
                            "type": "message",
                            "step": None,
                            "agent": self.name,
                            "role": "user",
                            "content": fix,
                            "repair": attempt + 1,
                        }
                    )
        steps: list[Task] = []
        if raw is not None:
            steps = self._validated(raw, members, notes, ctx.settings.max_steps)
            if not steps:
                reason = "invalid"
                notes.append("the plan has no step for an agent on the team other than the reporter")
        if not steps:
            return Plan(default_plan(goal, members), "fallback", notes, fmt is not None, reason or "invalid")
        return Plan(normalise_plan(steps, members, notes), "model", notes, fmt is not None)

    def _validated(
        self, raw: list[dict[str, Any]], members: dict[str, Agent], notes: list[str], max_steps: int
    ) -> list[Task]:
        kept: dict[int, Task] = {}
        for i, item in enumerate(raw[:max_steps], 1):
            if item["agent"] not in members:
                notes.append(f"step {i}: agent {item['agent']!r} is not on the team; dropped")
                continue
            kept[i] = Task(i, item["agent"], item["task"], [d for d in item["after"] if d < i])
        if len(raw) > max_steps:
            notes.append(f"the plan had {len(raw)} steps; kept the first {max_steps}")
        for t in kept.values():
            t.depends_on = [d for d in t.depends_on if d in kept]
        if not any(t.agent not in ("reporter",) for t in kept.values()):
            return []
        return list(kept.values())

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return True


WORKERS = ("analyst", "researcher")


def default_plan(goal: str, members: dict[str, Agent]) -> list[Task]:
    """analyst (and researcher, in parallel) -> chart -> reporter, with whoever is on the team."""
    steps: list[Task] = []
    for name in WORKERS:
        if name in members:
            steps.append(Task(len(steps) + 1, name, goal))
    if "analyst" in members and "chart" in members:
        steps.append(Task(len(steps) + 1, "chart", f"chart the analyst's results for: {goal}", [1]))
    if "reporter" in members:
        steps.append(Task(len(steps) + 1, "reporter", f"write the report for: {goal}", [s.id for s in steps]))
    return steps


TABLE_USERS = ("chart", "coder")  # agents that work on the tables analysts make


def normalise_plan(steps: list[Task], members: dict[str, Agent], notes: list[str]) -> list[Task]:
    """Reporter steps set aside and the rest renumbered 1..n; a chart or code step with no dependencies
    waits for the analyses before it (it works on their tables); a chart step after the first analysis
    and one final reporter step (after every other step) added when missing."""
    reporters = [t for t in steps if t.agent == "reporter"]
    kept = [t for t in steps if t.agent != "reporter"]
    mapping = {t.id: i for i, t in enumerate(kept, 1)}
    out = [Task(mapping[t.id], t.agent, t.task, [mapping[d] for d in t.depends_on if d in mapping]) for t in kept]
    for t in out:
        if t.agent in TABLE_USERS and not t.depends_on:
            t.depends_on = [p.id for p in out if p.id < t.id and p.agent == "analyst"]
            if t.depends_on:
                notes.append(f"step {t.id} ({t.agent}) waits for step(s) {', '.join(map(str, t.depends_on))}")
    analyst = next((t for t in out if t.agent == "analyst"), None)
    if analyst is not None and "chart" in members and not any(t.agent == "chart" for t in out):
        out.append(Task(len(out) + 1, "chart", f"chart the results of step {analyst.id}", [analyst.id]))
        notes.append("added a chart step")
    if "reporter" in members:
        task = reporters[-1].task if reporters else "write the report"
        out.append(Task(len(out) + 1, "reporter", task, [t.id for t in out]))
        if not reporters:
            notes.append("added the reporter step")
    return out


@dataclass
class Review:
    round: int
    approved: bool
    notes: str
    redo: list[int]
    source: str  # "model" or "checks"
    structured: bool = False  # the model was asked under ``review_schema``
    fallback_reason: str | None = None  # why the model's verdict was not used: budget, model_failed, length...

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "approved": self.approved,
            "notes": self.notes,
            "redo": self.redo,
            "source": self.source,
            "structured": self.structured,
            "fallback_reason": self.fallback_reason,
        }


REVIEW_FORMAT = 'Reply with JSON only: {"approve": true or false, "notes": "why", "redo": [STEP NUMBERS TO REDO]}'
REVIEW_TOKENS = 96  # the free-text verdict
STRUCTURED_REVIEW_TOKENS = 160  # room for the longest verdict ``review_schema`` admits


def review_schema(ids: list[int]) -> dict[str, Any]:
    """The JSON schema of a verdict: steps to redo are an enum of the plan's step numbers."""
    return {
        "type": "object",
        "properties": {
            "approve": {"type": "boolean"},
            "notes": {"type": "string", "maxLength": NOTES_CHARS},
            "redo": {"type": "array", "items": {"enum": ids}, "maxItems": len(ids)},
        },
        "required": ["approve", "notes"],
    }


class ReviewerAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            AgentProfile("reviewer", "the reviewer of a team's work", "check the results against the goal")
        )

    async def review(
        self, goal: str, steps: list[Task], outcomes: dict[int, StepOutcome], ctx: RunContext, round_: int
    ) -> Review:
        failed = [t.id for t in steps if not (o := outcomes.get(t.id)) or not o.ok]
        problems = [f"step {i} ({outcomes[i].agent if i in outcomes else '?'}) failed" for i in failed]
        if any(t.agent == "chart" for t in steps) and not ctx.workspace.charts:
            problems.append("no chart was made")
        if any(t.agent == "reporter" for t in steps) and ctx.workspace.report is None:
            problems.append("no report was written")
        checks = "; ".join(problems) or "every step succeeded"
        if ctx.budget.exhausted:
            return Review(
                round_, not failed, checks + " (budget spent: no model review)", failed, "checks", False, "budget"
            )
        results = "\n".join(
            f"{t.id}. {t.agent}: {t.task} -> {'ok' if outcomes.get(t.id) and outcomes[t.id].ok else 'failed'}: "
            f"{(outcomes[t.id].summary() if t.id in outcomes else 'not run')[:300]}"
            for t in steps
        )
        messages = [
            Message("system", f"{self.profile.describe()}\n\n{REVIEW_FORMAT}"),
            Message("user", f"Goal: {goal}\n\nResults:\n{results}"),
        ]
        for m in messages:
            await ctx.emit({"type": "message", "step": None, "agent": self.name, "role": m.role, "content": m.content})
        fmt = None
        if JSON_SCHEMA in await ctx.capabilities():
            fmt = ResponseFormat("json_schema", review_schema([t.id for t in steps]), "review")
        room = STRUCTURED_REVIEW_TOKENS if fmt is not None else REVIEW_TOKENS
        out = await ctx.ask(self.name, None, messages, room, response_format=fmt)
        verdict = _read_review(out.text if out is not None else "", {t.id for t in steps})
        if verdict is None:
            reason = "model_failed" if out is None else "length" if out.finish_reason == "length" else "unreadable"
            why = {"model_failed": "failed", "length": "cut at max_tokens", "unreadable": "unreadable"}[reason]
            notes = f"{checks} (the model's review was {why})"
            return Review(round_, not failed, notes, failed, "checks", fmt is not None, reason)
        approve, notes, redo = verdict
        if approve and redo:  # a verdict against itself: approval stands, only failed steps run again
            redo = []
            notes = (notes + " (approved: the steps named to redo are ignored)").strip()
        redo = sorted(set(redo) | set(failed))
        if not approve and not redo:
            approve, notes = True, (notes + " (nothing named to redo)").strip()
        return Review(round_, approve and not failed, f"{checks}. {notes}".strip(), redo, "model", fmt is not None)

    def judge(self, outcome: StepOutcome, ctx: RunContext) -> bool:
        return True


def _read_review(text: str, ids: set[int]) -> tuple[bool, str, list[int]] | None:
    start = text.find("{")
    if start == -1:
        return None
    try:
        obj = json.loads(repair_json(text[start:]))
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    approve = _first(obj, "approve", "approved", "ok", "pass")
    if not isinstance(approve, bool):
        return None
    redo = _first(obj, "redo", "retry", "steps") or []
    redo = [int(r) for r in (redo if isinstance(redo, list) else [redo]) if str(r).isdigit() and int(r) in ids]
    return approve, str(_first(obj, "notes", "note", "reason", "comment") or ""), redo


# --- the built-in registry -------------------------------------------------------------------------------------------


def builtin_specs() -> list[AgentSpec]:
    return [
        AgentSpec(
            "analyst",
            "writes and runs read-only SQL over the data source",
            lambda r: AnalystAgent(r.data) if r.data is not None else None,
        ),
        AgentSpec(
            "chart",
            "draws charts of the tables the team found",
            lambda r: ChartAgent(r.data) if r.data is not None and r.data.chart is not None else None,
        ),
        AgentSpec(
            "researcher",
            "finds and cites passages in the knowledge space",
            lambda r: ResearcherAgent(r.knowledge) if r.knowledge is not None else None,
        ),
        AgentSpec(
            "coder",
            "runs Python analysis in a sandbox (no network, time and memory limits)",
            lambda r: CoderAgent(r.code or CodeResource(runner_from(r.settings))),
        ),
        AgentSpec("reporter", "writes the markdown report with the charts", lambda r: ReporterAgent()),
    ]


def runner_from(settings: AgentSettings) -> CodeRunner:
    return CodeRunner(settings.code_timeout_s, settings.code_memory_mb, settings.code_output_bytes)


AGENTS: Registry[AgentSpec] = Registry("agent", error=partial(UnknownAgentError, param="agent"))
for _spec in builtin_specs():
    AGENTS.register(_spec.name, _spec)
TOOLS: Registry[Tool] = Registry("tool", error=partial(UnknownToolError, param="tool"))
