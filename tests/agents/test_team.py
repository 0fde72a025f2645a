"""Tools, action parsing, the team's orchestration, budgets, trace replay, memory and plugins, all
driven by the scripted model (its prompt rules give each agent its own script)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from pydantic import Field

from datapilot.agents import (
    AGENTS,
    TOOLS,
    ActionParseError,
    AgentSpec,
    LongTermMemory,
    OpenAIToolsClient,
    PluginError,
    ReplayClient,
    Trace,
    UnknownAgentError,
    UnknownToolError,
    load_folder,
    parse_action,
    parse_plan,
    tool,
)
from datapilot.apps import AgentOperator, AgentRunRequest, ChatContext, agent_events, agent_team
from datapilot.awel import DAG, InputOperator
from datapilot.cache import HashEmbedder
from datapilot.core.config import AgentSettings
from tests.agents.conftest import HAPPY_RULES, PLAN, SQL_ACTION, TEXT_RULES, Scripted, call

Context = Callable[..., ChatContext]
SETTINGS = AgentSettings()


async def run_events(
    ctx: ChatContext,
    goal: str = "How are orders split by status?",
    settings: AgentSettings = SETTINGS,
    trace: Trace | None = None,
    structured: bool = True,
    **request: object,
) -> list[dict[str, object]]:
    run = AgentRunRequest(goal, **request)  # type: ignore[arg-type]
    return [e async for e in agent_events(ctx, run, settings, trace=trace, structured=structured)]


def of(events: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [e for e in events if e["type"] == kind]


# --- tools and actions -----------------------------------------------------------------------------------------


async def test_a_function_becomes_a_tool_whose_failures_are_observations() -> None:
    @tool
    def add(a: int, b: Annotated[int, Field(description="the second number")] = 2) -> int:
        """Add two numbers."""
        return a + b

    @tool(name="explode", timeout_s=1)
    async def boom(reason: str) -> str:
        raise RuntimeError(f"broke: {reason}")

    params = add.parameters()
    assert add.description == "Add two numbers." and params["required"] == ["a"]
    assert params["properties"]["b"] == {"type": "integer", "default": 2, "description": "the second number"}
    assert add.openai_spec()["function"]["name"] == "add"
    assert (await add.call({"a": 1, "b": 5})).observation == "6"
    assert (await add.call('{"a": 3}')).data == 5  # JSON text is parsed
    assert (await add.call(7)).data == 9  # a bare value fills the only required parameter
    bad = await add.call({"a": "x"})
    assert not bad.ok and bad.error == "invalid_arguments" and "a:" in bad.observation
    extra = await add.call({"a": 1, "c": 1})
    assert not extra.ok and "c:" in extra.observation
    failed = await boom.call({"reason": "on purpose"})
    assert not failed.ok and failed.observation == "explode failed: RuntimeError: broke: on purpose"


def test_actions_are_read_tolerantly() -> None:
    assert parse_action(SQL_ACTION).tool == "run_sql"  # fence, single quotes, trailing commas
    assert parse_action(SQL_ACTION).repaired
    assert parse_action('Sure! {"action": "search", "action_input": "tea"} hope it helps').args == "tea"
    assert parse_action('{"name": "run_sql", "arguments": "{\\"sql\\": \\"SELECT 1\\"}"}').tool == "run_sql"
    assert parse_action('{"action": "Final Answer", "action_input": "42"}').final is None  # not a finish word
    assert parse_action('{"action": "final", "action_input": "42"}').final == "42"
    assert parse_action('{"final": "done"}').final == "done"
    assert parse_action("The answer is 42.").final == "The answer is 42."
    for broken in ('{"thought": "hmm"}', "{ : : }", ""):
        with pytest.raises(ActionParseError):
            parse_action(broken)
    assert [s["agent"] for s in parse_plan(PLAN)] == ["analyst", "chart", "reporter"]
    assert parse_plan("```\n[{agent: 'analyst', task: 'x',}, {'agent': 'chart', 'task': 'y', 'after': 1}]\n```")[1][
        "after"
    ] == [1]
    with pytest.raises(ValueError, match="no list of steps"):
        parse_plan("I would first look at the data.")


# --- the team ----------------------------------------------------------------------------------------------------


async def test_team_plans_queries_charts_reports_and_the_trace_replays(
    scripted: Scripted, context: Context, tmp_path: Path
) -> None:
    manager = await scripted(HAPPY_RULES)
    trace = Trace("How are orders split by status?")
    events = await run_events(context(manager), trace=trace)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds[-2] == "report"
    plan = of(events, "plan")[0]
    assert plan["source"] == "model" and [s["agent"] for s in plan["steps"]] == ["analyst", "chart", "reporter"]
    assert kinds.index("plan") < kinds.index("step_start") < kinds.index("tool_call") < kinds.index("chart")
    first = of(events, "tool_call")[0]
    assert first["tool"] == "run_sql" and first["repaired"] is False  # a native call: nothing to repair
    assert of(events, "start")[0]["capabilities"] == ["json_schema", "tools"]
    assert plan["structured"] and plan["fallback_reason"] is None
    assert of(events, "table")[0]["rows"] == [
        ["cancelled", 139],
        ["delivered", 1022],
        ["pending", 107],
        ["shipped", 232],
    ]
    assert of(events, "chart")[0]["spec"]["kind"] == "pie"
    assert all(e["ok"] for e in of(events, "step_done")) and of(events, "review")[0]["approved"]
    assert [(e["agent"], e["structured"], e["fallback"]) for e in of(events, "step_done")] == [
        ("analyst", True, None),
        ("chart", True, None),
        ("reporter", False, None),
    ]
    review = of(events, "review")[0]
    assert review["structured"] and review["source"] == "model" and review["fallback_reason"] is None
    report = of(events, "report")[0]
    assert "![orders per status](c1.svg)" in report["markdown"] and "Most orders were delivered" in report["markdown"]
    assert report["charts"][0]["svg"].lstrip().startswith(("<?xml", "<svg"))
    done = events[-1]
    assert done["ok"] and done["rounds"] == 1 and done["model_calls"] == 7

    # The trace is the stream: saved, loaded and replayed it gives the same records...
    saved = Trace.load(trace.save(tmp_path / "trace.json"))
    assert [r["seq"] for r in saved.replay()] == list(range(len(events)))
    assert list(saved.replay()) == json.loads(json.dumps(events))
    assert "call run_sql" in saved.render()
    # ... and replaying its model replies repeats the run without the model.
    ctx = context(manager)
    ctx.llm = ReplayClient(saved)
    again = await run_events(ctx)
    assert [(e["type"], e.get("tool")) for e in again] == [(e["type"], e.get("tool")) for e in events]


async def test_the_free_text_path_reads_tolerant_replies(scripted: Scripted, context: Context) -> None:
    """``structured=False`` (or a model without json_schema and tools): the same run from replies in
    the tolerant JSON action format, repaired where malformed."""
    manager = await scripted(TEXT_RULES)
    events = await run_events(context(manager), structured=False)
    assert of(events, "start")[0]["capabilities"] == []
    plan = of(events, "plan")[0]
    assert plan["source"] == "model" and not plan["structured"]
    call_record = of(events, "tool_call")[0]
    assert call_record["tool"] == "run_sql" and call_record["repaired"] is True
    assert of(events, "chart")[0]["spec"]["kind"] == "pie"
    steps = of(events, "step_done")
    assert all(e["ok"] and not e["structured"] and e["fallback"] is None for e in steps)
    assert not of(events, "review")[0]["structured"] and events[-1]["ok"] and events[-1]["model_calls"] == 7
    replies = [e for e in events if e["type"] == "message" and e["role"] == "assistant"]
    assert replies and not any("structured" in e or "tool_calls" in e for e in replies)


async def test_unreadable_actions_get_a_bounded_retry_then_the_analyst_falls_back(
    scripted: Scripted, context: Context
) -> None:
    rules = [
        ["You are planner", ["I think we should look at the data first."]],  # no plan: the default one
        ["You are analyst", ['{"thought": "hmm"}']],  # never an action
        ["-- Question:|Question:", ["status, COUNT(*) AS n FROM orders GROUP BY status"]],  # text-to-SQL
        ["You are chart", ["{ : : }"]],
        ["You are reporter", ["ok"]],  # not usable prose: the report summarises the findings itself
        ["You are reviewer", ["looks fine to me"]],
    ]
    manager = await scripted(rules)
    events = await run_events(context(manager), settings=AgentSettings(max_parse_retries=1), structured=False)
    plan = of(events, "plan")[0]
    assert plan["source"] == "fallback" and [s["agent"] for s in plan["steps"]] == ["analyst", "chart", "reporter"]
    assert "unreadable plan" in plan["notes"][0] and plan["fallback_reason"] == "unreadable"
    analyst = [e for e in events if e.get("agent") == "analyst"]
    assert sum(1 for e in analyst if e["type"] == "message" and e["role"] == "assistant" and not e.get("via")) == 2
    assert [e["repair"] for e in analyst if e.get("repair")] == [1]
    gave_up = of(events, "observation")
    assert gave_up and "no readable action after 1 repair request(s)" in str(gave_up[0]["content"])
    steps = {e["agent"]: e for e in of(events, "step_done")}
    assert steps["analyst"]["ok"] and steps["analyst"]["fallback"] == "text2sql"
    assert steps["analyst"]["fallback_reason"] == "unreadable"
    assert steps["chart"]["ok"] and steps["chart"]["fallback"] == "auto"
    assert steps["reporter"]["fallback"] == "findings" and steps["reporter"]["fallback_reason"] == "unusable"
    review = of(events, "review")[0]
    assert review["approved"] and review["source"] == "checks" and review["fallback_reason"] == "unreadable"
    assert "![" in str(of(events, "report")[0]["markdown"]) and events[-1]["ok"]


async def test_a_failing_tool_is_an_observation_and_the_run_goes_on(scripted: Scripted, context: Context) -> None:
    rules = [
        ["You are planner", [PLAN]],
        ["Observation from run_sql", ['{"tool": "no_such_tool", "args": {}}', '{"final": "gave up"}']],
        ["You are analyst", ['{"tool": "run_sql", "args": {"sql": "SELECT nope FROM nowhere"}}']],
        ["-- Question:|Question:", ["COUNT(*) FROM orders"]],
        *HAPPY_RULES[2:],
    ]
    manager = await scripted(rules)
    events = await run_events(context(manager), structured=False)
    results = of(events, "tool_result")
    assert not results[0]["ok"] and results[0]["error"] == "QueryError" and "nowhere" in str(results[0]["observation"])
    assert (
        not results[1]["ok"] and results[1]["error"] == "unknown_tool" and "run_sql" in str(results[1]["observation"])
    )
    # text-to-SQL answered with one number; an overview query then gives the chart something to draw
    assert of(events, "step_done")[0]["fallback"] == "profile" and of(events, "table")[0]["rows"] == [[1500]]
    assert of(events, "step_done")[0]["fallback_reason"] == "tool_failed"
    assert of(events, "table")[1]["title"] == "orders per month" and of(events, "chart")
    assert events[-1]["type"] == "done" and of(events, "report")


async def test_rounds_and_tokens_are_bounded(scripted: Scripted, context: Context) -> None:
    rules = [*HAPPY_RULES[:4], ["You are reviewer", ['{"approve": false, "notes": "redo it", "redo": [1]}']]]
    manager = await scripted(rules)
    events = await run_events(context(manager), settings=AgentSettings(max_rounds=2))
    reviews = of(events, "review")
    assert [r["round"] for r in reviews] == [1, 2] and not reviews[0]["approved"]
    # round 2 reran step 1 and the steps that depend on it
    assert [e["step"] for e in of(events, "step_start")] == [1, 2, 3, 1, 2, 3]
    assert events[-1]["rounds"] == 2

    events = await run_events(context(manager), settings=AgentSettings(max_tokens=400))
    done = events[-1]
    assert done["type"] == "done" and of(events, "budget")
    assert done["tokens"] < 400 + 700  # at most one call past the line
    assert of(events, "report") and of(events, "review")[0]["source"] == "checks"


async def test_independent_steps_run_at_the_same_time(scripted: Scripted, context: Context) -> None:
    rules = [
        ["Task: count orders", [call("run_sql", sql="SELECT COUNT(*) AS n FROM orders"), "1500 orders"]],
        ["Task: count customers", [call("run_sql", sql="SELECT COUNT(*) AS n FROM customers"), "120 customers"]],
        *HAPPY_RULES[3:],
    ]
    manager = await scripted(rules, token_delay_s=0.01)
    plan = [
        {"agent": "analyst", "task": "count orders"},
        {"agent": "analyst", "task": "count customers"},
        {"agent": "reporter", "task": "report", "after": [1, 2]},
    ]
    events = await run_events(context(manager), plan=plan)
    order = [(e["type"], e["step"]) for e in events if e["type"] in ("step_start", "step_done")]
    assert order[:2] == [("step_start", 1), ("step_start", 2)]  # both started before either finished
    assert order[-2:] == [("step_start", 3), ("step_done", 3)]
    assert of(events, "plan")[0]["source"] == "given"
    assert sorted(str(e["summary"]) for e in of(events, "step_done")[:2]) == ["120 customers", "1500 orders"]

    events = await run_events(context(manager), settings=AgentSettings(parallel=False), plan=plan)
    order = [(e["type"], e["step"]) for e in events if e["type"] in ("step_start", "step_done")]
    assert order[:2] == [("step_start", 1), ("step_done", 1)]


# --- memory, plugins, native tools, AWEL ---------------------------------------------------------------------


async def test_long_term_memory_retrieves_by_relevance_and_persists(tmp_path: Path) -> None:
    memory = LongTermMemory(HashEmbedder(), tmp_path / "memory.db")
    await memory.add(
        ["monthly revenue grew in the west region", "the refund policy allows 30 days", "tea sells best in winter"],
        [{"run": "a"}, {"run": "b"}, {"run": "c"}],
    )
    hits = await memory.search("how did revenue grow by region", k=2)
    assert hits[0].text == "monthly revenue grew in the west region" and hits[0].metadata == {"run": "a"}
    assert await memory.search("revenue", where={"run": "b"}) == []
    memory.close()
    again = LongTermMemory(HashEmbedder(), tmp_path / "memory.db")
    assert len(again) == 3 and (await again.search("refund policy days"))[0].metadata == {"run": "b"}
    again.close()


async def test_runs_store_and_recall_findings_in_memory(scripted: Scripted, context: Context) -> None:
    manager = await scripted(HAPPY_RULES)
    memory = LongTermMemory(HashEmbedder())
    ctx = context(manager)
    request = AgentRunRequest("How are orders split by status?")
    team = await agent_team(ctx, request, SETTINGS, memory=memory)
    [e async for e in team.run(request.goal)]
    assert len(memory) == 2  # the analyst's and the chart maker's findings
    events = [e async for e in team.run(request.goal)]
    system = next(e for e in events if e["type"] == "message" and e.get("agent") == "analyst")
    assert "Relevant past findings" in str(system["content"]) and "delivered orders dominate" in str(system["content"])
    memory.close()


PLUGIN = '''
from datapilot.agents import Agent, AgentProfile, AgentSpec, tool

@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())

greeter = AgentSpec("greeter", "says hello", lambda r: Agent(AgentProfile("greeter", "a greeter")))
'''


async def test_plugins_load_from_a_folder_through_the_allow_list(
    tmp_path: Path, scripted: Scripted, context: Context
) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "words.py").write_text(PLUGIN)
    (tmp_path / "plugins" / "broken.py").write_text("import no_such_module_here\n")
    tools, agents = TOOLS.copy({"word_count"}), AGENTS.copy({"word_count"})
    report = load_folder(tmp_path / "plugins", tools, agents)
    assert report.loaded == ["tool:word_count"]
    assert report.refused and "greeter" in report.refused[0] and "allow-list" in report.refused[0]
    assert report.errors and report.errors[0].startswith("broken.py: ModuleNotFoundError")
    assert "word_count" not in TOOLS  # the shared registry is untouched
    with pytest.raises(PluginError):
        load_folder(tmp_path / "missing", tools, agents)

    rules = [
        ["You are analyst", ['{"tool": "word_count", "args": {"text": "one two three"}}', '{"final": "3"}']],
        *HAPPY_RULES[2:],
    ]
    manager = await scripted(rules)
    plan = [{"agent": "analyst", "task": "count words"}]
    ctx = context(manager)
    team = await agent_team(
        ctx, AgentRunRequest("words", tools=["word_count"], plan=plan), SETTINGS, tool_registry=tools, structured=False
    )
    events = [e async for e in team.run("words", plan=plan)]
    assert of(events, "tool_result")[0]["observation"] == "3"
    with pytest.raises(UnknownToolError, match="unknown tool 'rm_rf'"):
        await agent_team(ctx, AgentRunRequest("x", tools=["rm_rf"]), SETTINGS, tool_registry=tools)
    with pytest.raises(UnknownAgentError, match="unknown agent 'greeter'"):
        await agent_team(ctx, AgentRunRequest("x", agents=["greeter"]), SETTINGS)
    everyone = AGENTS.copy()
    load_folder(tmp_path / "plugins", TOOLS.copy(), everyone)
    assert "greeter" in everyone and isinstance(everyone.get("greeter"), AgentSpec)


async def test_native_tool_calls_through_openai_tools(context: Context) -> None:
    calls: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 5}
        if "tools" in body and not any(m["role"] == "tool" for m in body["messages"]):
            call = {
                "id": "c1",
                "type": "function",
                "function": {"name": "run_sql", "arguments": '{"sql": "SELECT COUNT(*) AS n FROM products"}'},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": "There are 40 products."}
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage})

    client = OpenAIToolsClient("http://upstream.test/v1", transport=httpx.MockTransport(answer))
    ctx = context(None)
    ctx.llm = client
    plan = [{"agent": "analyst", "task": "how many products?"}]
    events = await run_events(ctx, "products", plan=plan, agents=["analyst"])
    await client.aclose()
    first = calls[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["ask_data", "run_sql", "list_tables"]  # type: ignore[index]
    assert first["tools"][1]["function"]["parameters"]["required"] == ["sql"]  # type: ignore[index]
    assert first["tool_choice"] == "required" and first["parallel_tool_calls"] is False  # type: ignore[index]
    assert calls[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": of(events, "tool_result")[0]["observation"],
    }  # type: ignore[index]
    assert (
        of(events, "table")[0]["rows"] == [[40]] and of(events, "step_done")[0]["summary"] == "There are 40 products."
    )


async def test_awel_operator_runs_a_team(scripted: Scripted, sources: object) -> None:
    from datapilot.awel import OPERATORS

    manager = await scripted(HAPPY_RULES)
    connector = await sources.connector("sample")  # type: ignore[attr-defined]
    with DAG("agents") as dag:
        InputOperator() >> AgentOperator("s", connector=connector, llm=manager, max_rounds=1)
    result = await dag.run("How are orders split by status?")
    assert result["ok"] and "![orders per status](c1.svg)" in result["report"]
    assert result["trace"]["records"][-1]["type"] == "done"
    assert OPERATORS.get("agent_team") is AgentOperator
    assert AgentOperator("s", database="shop").requirements()[1].kind == "database"


def test_trend_facts_say_what_changed_over_time_only() -> None:
    from datapilot.agents._agent import TableArtifact
    from datapilot.agents._builtin import trend_facts
    from datapilot.datasource import QueryResult

    monthly = QueryResult(
        "SELECT ...", ["month", "orders"], [("2024-01", 40), ("2024-02", 58), ("2024-03", 30), ("2024-04", 50)]
    )
    facts = trend_facts(TableArtifact("t1", "orders per month", monthly))
    assert facts == ("orders went from 40 (2024-01) to 50 (2024-04) (+25%); highest 58 (2024-02), lowest 30 (2024-03).")
    by_status = QueryResult("SELECT ...", ["status", "orders"], [("cancelled", 139), ("delivered", 1022)])
    assert trend_facts(TableArtifact("t2", "orders per status", by_status)) == ""  # categories: no change
    one_row = QueryResult("SELECT ...", ["month", "orders"], [("2024-01", 40)])
    assert trend_facts(TableArtifact("t3", "one month", one_row)) == ""
