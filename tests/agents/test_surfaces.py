"""The surfaces: REST (``/api/agents``, the ``agent`` chat scene) and the CLI, with the scripted model
in process; then the real embedded model on the session server, through REST and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from datapilot.agents import Trace
from datapilot.cli.main import app as cli_app
from datapilot.core.config import AgentSettings, CacheEmbedderConfig, KnowledgeSection, ModelConfig, Settings
from datapilot.server.app import create_app
from datapilot.testing import ServerProcess, write_config
from tests.agents.conftest import HAPPY_RULES

GOAL = "How are orders split by status?"


def sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path / "home",
        models=[ModelConfig(name="s", backend="scripted", params={"rules": HAPPY_RULES})],
        knowledge=KnowledgeSection(embedder=CacheEmbedderConfig(kind="hash")),
        agents=AgentSettings(max_rounds=2),
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_rest_runs_stream_each_step_and_keep_the_trace(client: TestClient) -> None:
    listed = client.get("/api/agents").json()
    assert {"analyst", "chart", "researcher", "coder", "reporter"} <= {a["name"] for a in listed["agents"]}
    assert listed["settings"]["max_rounds"] == 2

    with client.stream("POST", "/api/agents/run", json={"goal": GOAL}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse(resp.iter_lines())
    kinds = [e["type"] for e in events]
    for kind in (
        "start",
        "plan",
        "step_start",
        "message",
        "tool_call",
        "tool_result",
        "chart",
        "step_done",
        "review",
        "report",
        "done",
    ):
        assert kind in kinds, kind
    assert kinds[-1] == "done" and events[-1]["ok"]
    report = next(e for e in events if e["type"] == "report")
    assert "![orders per status](c1.svg)" in report["markdown"] and report["charts"][0]["vega_lite"]["mark"]

    answer = client.post("/api/agents/run", json={"goal": GOAL, "stream": False})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] and body["charts"][0]["spec"]["kind"] == "pie" and "# How are orders" in body["report"]
    stored = client.get(f"/api/agents/runs/{body['run_id']}").json()
    assert stored["records"] == body["trace"]["records"] and Trace.from_dict(stored).render()
    assert body["run_id"] in {r["run_id"] for r in client.get("/api/agents/runs").json()["data"]}
    missing = client.get("/api/agents/runs/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_rest_refuses_bad_input_with_openai_style_errors(client: TestClient) -> None:
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"goal": ""}, 400, None),
        ({"goal": "x", "bogus": 1}, 400, None),
        ({"goal": "x", "max_rounds": 0}, 400, None),
        ({"goal": "x", "datasource": "nope"}, 404, "datasource_not_found"),
        ({"goal": "x", "agents": ["ghost"]}, 400, "unknown_agent"),
        ({"goal": "x", "tools": ["rm_rf"]}, 400, "unknown_tool"),
        ({"goal": "x", "space": "no-such-space"}, 404, None),
        ({"goal": "x", "model": "no-such-model"}, 404, "model_not_found"),
    ]
    for body, status, code in cases:
        resp = client.post("/api/agents/run", json=body)
        assert resp.status_code == status, (body, resp.text)
        error = resp.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error", body
        if code:
            assert error["code"] == code, body


def test_the_agent_chat_scene(client: TestClient) -> None:
    assert "agent" in client.get("/api/chat/scenes").json()["data"]
    with client.stream("POST", "/api/chat", json={"scene": "agent", "question": GOAL, "stream": True}) as resp:
        events = sse(resp.iter_lines())
    assert all(e["scene"] == "agent" for e in events) and events[-1]["type"] == "done"
    assert any(e["type"] == "chart" for e in events)
    answer = client.post("/api/chat", json={"scene": "agent", "question": GOAL}).json()
    assert answer["scene"] == "agent" and answer["ok"] and answer["charts"]


def test_cli_runs_a_team_in_process(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "datapilot.toml", [{"name": "s", "backend": "scripted", "params": {"rules": HAPPY_RULES}}]
    )
    out, trace = tmp_path / "out", tmp_path / "trace.json"
    result = CliRunner().invoke(
        cli_app,
        [
            "agent",
            "run",
            GOAL,
            "--config",
            str(config),
            "--home",
            str(tmp_path / "home"),
            "--out",
            str(out),
            "--trace",
            str(trace),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "plan (model): 1. analyst" in result.output and "call run_sql" in result.output
    report = (out / "report.md").read_text()
    assert "![orders per status](c1.svg)" in report and (out / "c1.svg").read_text().lstrip().startswith("<")
    records = Trace.load(trace).records
    assert records[0]["type"] == "start" and records[-1]["type"] == "done"


# --- the real embedded model ---------------------------------------------------------------------------------------

REAL_GOAL = "Analyse monthly sales and tell me what changed"


@pytest.mark.slow
def test_a_short_team_on_the_real_model_ends_within_bounds(server: ServerProcess, tmp_path: Path) -> None:
    """Gemma 270M writes poor plans and JSON: the run must still end within its bounds, every step in the
    trace, with a report that has a chart (the fallbacks carry it)."""
    body = {"goal": REAL_GOAL, "datasource": "sample", "max_rounds": 2, "max_turns": 1, "max_tokens": 6000}
    started = time.monotonic()
    with httpx.stream("POST", f"{server.url}/api/agents/run", json=body, timeout=300) as resp:
        assert resp.status_code == 200, resp.read()
        events = sse(resp.iter_lines())
    elapsed = time.monotonic() - started
    trace = Trace.from_dict(httpx.get(f"{server.url}/api/agents/runs/{events[0]['run_id']}", timeout=30).json())
    (tmp_path / "real_trace.txt").write_text(trace.render(240))
    trace.save(tmp_path / "real_trace.json")
    done = events[-1]
    assert done["type"] == "done" and done["rounds"] <= 2 and done["tokens"] <= 6000 + 3000
    plan = next(e for e in events if e["type"] == "plan")
    started_steps = {e["step"] for e in events if e["type"] == "step_start"}
    finished_steps = {e["step"] for e in events if e["type"] == "step_done"}
    assert {s["id"] for s in plan["steps"]} == started_steps == finished_steps
    report = next(e for e in events if e["type"] == "report")
    assert report["charts"] and "![" in report["markdown"] and report["charts"][0]["svg"]
    assert len(trace.records) == len(events) and elapsed < 240


@pytest.mark.slow
def test_the_cli_gets_a_report_with_a_chart_from_the_server(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_app,
        [
            "agent",
            "run",
            "How many orders per status?",
            "--url",
            server.url,
            "--agent",
            "analyst",
            "--agent",
            "chart",
            "--max-rounds",
            "1",
            "--max-tokens",
            "1500",
            "--out",
            str(out),
            "--trace",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "![" in report and list(out.glob("c*.svg"))
    assert Trace.load(tmp_path / "t.json").records[-1]["type"] == "done"
