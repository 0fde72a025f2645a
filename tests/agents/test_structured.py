"""Structured answers: what the planner, the reviewer, the tool agents and the dashboard scene send when
the model enforces JSON schemas and tool calls, that a valid answer is used without a fallback, and
that the trace says when a fallback still happens and why. Then one plan from the real Gemma."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from datapilot.agents import Agent, AgentProfile, Budget, RunContext, Task, Trace, plan_schema
from datapilot.agents import _builtin as builtin
from datapilot.agents._builtin import normalise_plan
from datapilot.apps import AgentRunRequest, ChatContext, SceneRequest, agent_events, agent_team, run_scene
from datapilot.core.config import AgentSettings, DataSettings
from datapilot.core.types import ModelChunk, ModelInfo, ModelOutput, ModelRequest
from datapilot.datasource import DataSources
from datapilot.models.manager import ModelManager
from datapilot.models.remote import RemoteLLMClient
from datapilot.testing import ServerProcess
from tests.agents.conftest import HAPPY_RULES, PLAN, REPORT, REVIEW, SQL_CALL, Scripted, call
from tests.conftest import CHAT_MODEL

Context = Callable[..., ChatContext]
GOAL = "How are orders split by status?"


class Recording:
    """An ``LLMClient`` that keeps every request it passes on."""

    def __init__(self, inner: ModelManager) -> None:
        self.inner = inner
        self.requests: list[ModelRequest] = []

    async def generate(self, request: ModelRequest) -> ModelOutput:
        self.requests.append(request)
        return await self.inner.generate(request)

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        return self.inner.stream(request)

    async def models(self) -> list[ModelInfo]:
        return await self.inner.models()

    def of(self, agent: str) -> list[ModelRequest]:
        return [r for r in self.requests if r.messages and r.messages[0].content.startswith(f"You are {agent},")]


async def events_of(ctx: ChatContext, settings: AgentSettings | None = None, **kw: Any) -> list[dict[str, Any]]:
    request = AgentRunRequest(GOAL, **kw)
    return [e async for e in agent_events(ctx, request, settings or AgentSettings())]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_plans_reviews_and_tool_calls_are_asked_for_under_schemas(scripted: Scripted, context: Context) -> None:
    manager = await scripted(HAPPY_RULES)
    ctx = context(manager)
    client = Recording(manager)
    ctx.llm = client
    settings = AgentSettings()
    events = await events_of(ctx, settings)

    [planner] = client.of("planner")
    assert planner.response_format is not None and planner.response_format.type == "json_schema"
    schema: Any = planner.response_format.schema
    assert schema["properties"]["steps"]["items"]["properties"]["agent"]["enum"] == [
        "analyst",
        "chart",
        "coder",
        "reporter",
    ]  # the team's agents, nobody else
    assert planner.params.max_tokens is not None and planner.params.max_tokens > settings.max_reply_tokens
    assert not planner.tools

    [reviewer] = client.of("reviewer")
    assert reviewer.response_format is not None and reviewer.response_format.name == "review"
    assert reviewer.response_format.schema["properties"]["redo"]["items"] == {"enum": [1, 2, 3]}  # type: ignore[index]

    first, second = client.of("analyst")
    assert [t.name for t in first.tools] == ["ask_data", "run_sql", "list_tables"]
    assert not first.parallel_tool_calls  # one call a turn
    assert first.tools[1].parameters["required"] == ["sql"]
    assert first.tools[0].parameters["properties"]["question"] == {"type": "string", "minLength": 1}  # type: ignore[index]
    assert first.tool_choice == "required" and second.tool_choice == "auto"  # a table exists: it may answer
    called = second.messages[-2]  # type: ignore[index]
    answer = second.messages[-1]  # type: ignore[index]
    assert called.role == "assistant" and called.tool_calls[0].name == "run_sql"
    assert answer.role == "tool" and answer.tool_call_id == called.tool_calls[0].id and "cancelled" in answer.content
    assert all(r.response_format is None for r in client.of("analyst"))
    chart = client.of("chart")
    assert [t.name for t in chart[0].tools] == ["make_chart"] and chart[0].tool_choice == "required"
    [reporter] = client.of("reporter")
    assert reporter.response_format is None and not reporter.tools  # prose

    # Every answer was used as given: nothing fell back, and the trace says the path taken.
    plan = of(events, "plan")[0]
    assert plan["source"] == "model" and plan["structured"] and plan["fallback_reason"] is None
    steps = of(events, "step_done")
    assert [(s["agent"], s["structured"], s["fallback"]) for s in steps] == [
        ("analyst", True, None),
        ("chart", True, None),
        ("reporter", False, None),
    ]
    review = of(events, "review")[0]
    assert review["source"] == "model" and review["structured"] and review["approved"]
    replies = [e for e in events if e["type"] == "message" and e["role"] == "assistant"]
    assert [e.get("structured") for e in replies] == [
        "json_schema",
        "tools",
        "tools",
        "tools",
        "tools",
        None,
        "json_schema",
    ]
    assert replies[1]["tool_calls"][0]["function"]["name"] == "run_sql" and replies[1]["finish_reason"] == "tool_calls"


async def test_the_trace_says_when_and_why_a_structured_step_still_falls_back(
    scripted: Scripted, context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = [
        # valid under the plan's schema, but against the team's rules: no step for a working agent
        ["You are planner", ['{"steps": [{"agent": "reporter", "task": "write it"}]}']],
        ["You are analyst", [call("run_sql", sql="SELECT nope FROM nowhere")]],  # a readable call that fails
        ["-- Question:|Question:", ["status, COUNT(*) AS n FROM orders GROUP BY status"]],  # text-to-SQL
        ["You are chart", [call("make_chart", table="t1", kind="bar")]],
        ["You are reporter", [REPORT]],
        ["You are reviewer", [REVIEW]],
    ]
    manager = await scripted(rules)
    events = await events_of(context(manager), AgentSettings(max_turns=1))
    plan = of(events, "plan")[0]
    assert plan["source"] == "fallback" and plan["structured"] and plan["fallback_reason"] == "invalid"
    assert "no step for an agent on the team" in plan["notes"][-1]
    analyst = of(events, "step_done")[0]
    assert analyst["agent"] == "analyst" and analyst["ok"] and analyst["structured"]
    assert analyst["fallback"] == "text2sql" and analyst["fallback_reason"] == "tool_failed"
    chart = of(events, "step_done")[1]
    assert chart["agent"] == "chart" and chart["fallback"] is None and chart["fallback_reason"] is None

    # A plan cut at max_tokens is said to be cut, not unreadable (the room is made small here: the
    # planner's own leaves room for the longest plan its schema admits).
    monkeypatch.setattr(builtin, "plan_tokens", lambda max_steps: 4)
    manager = await scripted([["You are planner", [PLAN]], *rules[1:]])
    events = await events_of(context(manager), AgentSettings(max_parse_retries=0, max_tokens=150))
    plan = of(events, "plan")[0]
    cut = [e for e in events if e["type"] == "message" and e.get("agent") == "planner" and e["role"] == "assistant"]
    assert cut[0]["finish_reason"] == "length" and cut[0]["structured"] == "json_schema"
    assert plan["source"] == "fallback" and plan["fallback_reason"] == "length" and "cut at" in plan["notes"][0]
    review = of(events, "review")[0]
    assert review["source"] == "checks" and review["fallback_reason"] == "budget"


async def test_a_model_without_schemas_gets_the_free_text_path(scripted: Scripted, context: Context) -> None:
    manager = await scripted(HAPPY_RULES)
    ctx = context(manager)
    client = Recording(manager)
    ctx.llm = client

    async def plain() -> list[ModelInfo]:
        return [ModelInfo("s", "scripted", frozenset({"chat"}))]

    client.models = plain  # type: ignore[method-assign]
    events = await events_of(ctx)
    assert all(r.response_format is None and not r.tools for r in client.requests)
    assert of(events, "plan")[0]["source"] == "model" and not of(events, "plan")[0]["structured"]
    assert of(events, "tool_call")[0]["tool"] == "run_sql"  # the envelope read as a JSON action
    assert events[-1]["ok"]


async def test_the_dashboard_asks_for_its_plan_under_a_schema(scripted: Scripted, sources: DataSources) -> None:
    board = (
        '{"analyses": [{"title": "Orders by status", "sql": "SELECT status, COUNT(*) AS n FROM orders '
        'GROUP BY status", "chart": "pie"}, {"title": "Orders per month", "sql": "SELECT substr(order_date, 1, 7) '
        'AS month, COUNT(*) AS n FROM orders GROUP BY 1", "chart": "line"}]}'
    )
    manager = await scripted([["dashboard", [board]]])
    client = Recording(manager)
    ctx = ChatContext(client, "s", sources, DataSettings())  # type: ignore[arg-type]
    events = [e async for e in run_scene("dashboard", ctx, SceneRequest("Order overview"))]
    [request] = client.requests
    assert request.response_format is not None and request.response_format.name == "dashboard"
    assert events[0]["name"] == "plan" and events[0]["structured"] is True
    analyses = events[-1]["answer"]["analyses"]
    assert [(a["title"], a["chart"]["spec"]["kind"]) for a in analyses] == [
        ("Orders by status", "pie"),
        ("Orders per month", "line"),
    ]
    assert not [e for e in events if e.get("name") == "fallback"]

    # Analyses that parse but cannot run: the fallback step says so.
    bad = '{"analyses": [{"title": "Bad", "sql": "DROP TABLE orders", "chart": "bar"}]}'
    manager = await scripted([["dashboard", [bad]], ["Question:", ["COUNT(*) FROM orders"]]])
    ctx = ChatContext(manager, "s", sources, DataSettings())
    events = [e async for e in run_scene("dashboard", ctx, SceneRequest("Orders"))]
    [fallback] = [e for e in events if e.get("name") == "fallback"]
    assert fallback["cause"] == "invalid" and fallback["structured"] is True
    analyses = events[-1]["answer"]["analyses"]
    assert analyses[0]["error"]["code"] == "read_only_violation" and analyses[1]["table"]["rows"] == [[1500]]


# --- the real embedded model --------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_gemma_plans_under_the_schema_without_a_fallback(server: ServerProcess, sources: DataSources) -> None:
    """Gemma 270M rarely writes a readable plan as free text; constrained to the plan's schema it
    always does, and its agents are the team's."""
    client = RemoteLLMClient(server.v1)
    try:
        ctx = ChatContext(client, CHAT_MODEL, sources, DataSettings())  # type: ignore[arg-type]
        team = await agent_team(ctx, AgentRunRequest(GOAL), AgentSettings())
        run = RunContext(client, CHAT_MODEL, team.settings, Trace(GOAL), Budget.from_settings(team.settings))  # type: ignore[arg-type]
        plan = await team.planner.plan(GOAL, run, team.members)
    finally:
        await client.aclose()
    assert plan.structured and plan.source == "model" and plan.fallback_reason is None, plan.notes
    assert not any(n.startswith("unreadable plan") for n in plan.notes)
    assert {t.agent for t in plan.steps} <= set(team.members) and plan.steps[-1].agent == "reporter"
    reply = next(r for r in run.trace.records if r["type"] == "message" and r["role"] == "assistant")
    assert reply["structured"] == "json_schema" and reply["finish_reason"] == "stop"
    assert plan_schema(team.members, team.settings.max_steps)["required"] == ["steps"]


def test_a_plan_is_renumbered_and_its_chart_and_code_steps_wait_for_the_analysis() -> None:
    """Readable plans from a small model put the reporter anywhere and forget dependencies."""
    members = {n: Agent(AgentProfile(n, n)) for n in ("analyst", "chart", "coder", "reporter")}
    steps = [
        Task(1, "analyst", "count orders per status"),
        Task(2, "chart", "chart it"),
        Task(3, "reporter", "write the report"),
        Task(4, "coder", "compute shares"),
        Task(5, "chart", "chart the shares", [4]),
        Task(6, "reporter", "write the final report"),
    ]
    notes: list[str] = []
    out = normalise_plan(steps, members, notes)
    assert [(t.id, t.agent, t.depends_on) for t in out] == [
        (1, "analyst", []),
        (2, "chart", [1]),
        (3, "coder", [1]),
        (4, "chart", [3]),
        (5, "reporter", [1, 2, 3, 4]),
    ]
    assert out[-1].task == "write the final report" and len(notes) == 2


async def test_an_approval_that_names_steps_to_redo_is_an_approval(scripted: Scripted, context: Context) -> None:
    rules = [*HAPPY_RULES[:4], ["You are reviewer", ['{"approve": true, "notes": "fine", "redo": [1, 2]}']]]
    manager = await scripted(rules)
    events = await events_of(context(manager))
    [review] = of(events, "review")
    assert review["approved"] and review["redo"] == [] and "ignored" in review["notes"]
    assert len(of(events, "step_start")) == 3  # nothing ran twice


async def test_calls_that_cannot_give_anything_new_are_not_made_again(scripted: Scripted, context: Context) -> None:
    pie = call("make_chart", table="t1", kind="pie")
    rules = [
        HAPPY_RULES[0],
        ["You are analyst", [call("list_tables"), SQL_CALL, "delivered orders dominate"]],
        ["You are chart", [pie, pie]],
        *HAPPY_RULES[3:],
    ]
    manager = await scripted(rules)
    ctx = context(manager)
    client = Recording(manager)
    ctx.llm = client
    events = await events_of(ctx)
    first, second, third = client.of("analyst")
    assert len(first.tools) == 3
    assert [t.name for t in second.tools] == ["ask_data", "run_sql"]  # list_tables has answered
    assert second.tool_choice == "required" and third.tool_choice == "auto"
    assert len(of(events, "chart")) == 1  # the repeated call was not run
    assert any("called again with the same arguments" in str(e.get("note")) for e in of(events, "note"))
    assert all(s["fallback"] is None for s in of(events, "step_done"))


async def test_a_question_about_something_else_is_refused(scripted: Scripted, context: Context) -> None:
    """A small model held to the call's shape fills it with whatever it saw last (here, an example of
    its prompt format): the tool refuses it, and the step falls back saying so."""
    rules = [
        HAPPY_RULES[0],
        ["You are analyst", [call("ask_data", question="What is the capital of France?")]],
        ["-- Question:|Question:", ["status, COUNT(*) AS n FROM orders GROUP BY status"]],
        *HAPPY_RULES[2:],
    ]
    manager = await scripted(rules)
    events = await events_of(context(manager), AgentSettings(max_turns=1))
    refused = of(events, "tool_result")[0]
    assert not refused["ok"] and "mentions nothing of the task" in refused["observation"]
    analyst = of(events, "step_done")[0]
    assert analyst["fallback"] == "text2sql" and analyst["fallback_reason"] == "tool_failed" and analyst["ok"]
    assert of(events, "table")[0]["title"] == "orders per status"  # the fallback asked the task itself
