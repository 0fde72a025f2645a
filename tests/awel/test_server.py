"""AWEL over HTTP on a real server started with the flows folder, and the `datapilot flow` CLI.

The RAG flows run end to end on the embedded models (Gemma 3 270M through llama.cpp, MiniLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from datapilot.testing import ServerProcess, write_config

DOCS = [
    "AWEL is DataPilot's workflow language for composing LLM applications as DAGs.",
    "The semantic cache answers repeated questions without calling the model.",
    "Paris is the capital of France.",
]


def trigger(srv: ServerProcess, path: str) -> str:
    return f"{srv.url}/api/v1/awel/trigger{path}"


def test_flows_are_listed_and_a_broken_one_is_reported_by_name(awel_server: ServerProcess) -> None:
    body = httpx.get(f"{awel_server.url}/api/v1/awel/flows", timeout=10).json()
    names = {f["name"] for f in body["data"]}
    assert {"RAG", "ingest", "simple_rag_example", "echo_stream"} <= names
    assert "broken" not in names
    (broken,) = [e for e in body["errors"] if e["source"].endswith("broken.dsl")]
    assert "'vicuna-13b', which is not configured" in broken["message"]
    assert "'text2vec', which is not configured" in broken["message"]
    assert "vector store 'chromadb'" in broken["message"]
    shown = httpx.get(f"{awel_server.url}/api/v1/awel/flows/RAG", timeout=10).json()
    assert shown["graph"]["nodes"][3]["params"] == {"model": "gemma-3-270m", "temperature": 0.7, "max_tokens": 32}
    assert shown["mermaid"].startswith("flowchart TD")
    assert shown["triggers"][0]["path"] == "/api/v1/awel/trigger/examples/rags"


@pytest.mark.slow
def test_dsl_rag_runs_end_to_end_over_http_on_the_embedded_models(awel_server: ServerProcess) -> None:
    stored = httpx.post(trigger(awel_server, "/examples/ingest"), json={"texts": DOCS}, timeout=60)
    assert stored.status_code == 200, stored.text
    assert stored.json()["added"] == 3 and stored.json()["total"] >= 3
    resp = httpx.post(
        trigger(awel_server, "/examples/rags"), json={"question": "What is the capital of France?"}, timeout=120
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"] == "gemma-3-270m" and answer["text"].strip()
    assert answer["finish_reason"] in ("stop", "length") and answer["usage"]["prompt_tokens"] > 20


@pytest.mark.slow
def test_the_rag_example_flow_runs_as_a_dag(awel_server: ServerProcess) -> None:
    httpx.post(trigger(awel_server, "/examples/ingest"), json={"texts": DOCS}, timeout=60).raise_for_status()
    url = trigger(awel_server, "/examples/simple_rag")
    first = httpx.post(url, json={"conv_uid": "c1", "user_input": "What is AWEL?"}, timeout=120)
    assert first.status_code == 200, first.text
    assert isinstance(first.json(), str) and first.json()
    second = httpx.post(url, json={"conv_uid": "c1", "user_input": "And the cache?"}, timeout=120)
    assert second.status_code == 200, second.text
    bad = httpx.post(url, json={"conv_uid": "c1", "user_input": ""}, timeout=10)
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "user_input"
    assert err["details"][0]["loc"] == ["user_input"]


def test_request_errors_are_clear(awel_server: ServerProcess) -> None:
    not_json = httpx.post(trigger(awel_server, "/examples/rags"), content=b"{oops", timeout=10)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    no_text = httpx.post(trigger(awel_server, "/examples/rags"), json={"colour": "red"}, timeout=30)
    assert no_text.status_code == 400
    assert (
        "needs text" in no_text.json()["error"]["message"] and "'processedData'" in no_text.json()["error"]["message"]
    )
    missing = httpx.post(trigger(awel_server, "/nope"), json={}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "flow_not_found"
    wrong = httpx.get(trigger(awel_server, "/examples/rags"), timeout=10)
    assert wrong.status_code == 405


def test_streaming_flow_answers_server_sent_events(awel_server: ServerProcess) -> None:
    with httpx.stream(
        "POST", trigger(awel_server, "/test/stream"), json={"question": "one two three"}, timeout=30
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(chunks) == "You said: one two three"


def test_run_a_flow_through_rest(awel_server: ServerProcess) -> None:
    resp = httpx.post(
        f"{awel_server.url}/api/v1/awel/flows/ingest/run", json={"input": {"texts": ["x y z"]}}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"]["added"] == 1
    assert httpx.post(f"{awel_server.url}/api/v1/awel/flows/nope/run", json={}, timeout=10).status_code == 404


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "datapilot", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def test_cli_flow_list_show_and_run(flows_dir: Path, tmp_path: Path) -> None:
    listed = cli("flow", "list", "--flows-dir", str(flows_dir))
    assert listed.returncode == 0, listed.stderr
    assert "simple_rag_example" in listed.stdout and "/api/v1/awel/trigger/examples/rags" in listed.stdout
    shown = cli("flow", "show", "RAG", "--flows-dir", str(flows_dir), "--format", "mermaid")
    assert shown.returncode == 0 and shown.stdout.startswith("flowchart TD")
    as_json = cli("flow", "show", "RAG", "--flows-dir", str(flows_dir), "--format", "json")
    assert json.loads(as_json.stdout)["name"] == "RAG"
    unknown = cli("flow", "show", "nope", "--flows-dir", str(flows_dir))
    assert unknown.returncode == 1 and "no flow named 'nope'" in unknown.stderr

    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "shout.dsl").write_text(
        "CREATE WORKFLOW shout AS BEGIN\n"
        '  DATA q = RECEIVE REQUEST FROM http_source("/shout");\n'
        '  DATA a = APPLY LLM "echo" WITH DATA q;\n'
        "  DATA t = TRANSFORM a USING text_output();\n"
        '  DATA u = TRANSFORM t USING map(fn = "upper");\n'
        "END;\n"
    )
    config = write_config(tmp_path / "datapilot.toml", [{"name": "echo", "backend": "scripted"}])
    once = cli(
        "flow",
        "run",
        "shout",
        "-d",
        str(folder),
        "-c",
        str(config),
        "--home",
        str(tmp_path),
        "--input",
        '{"question": "hi there"}',
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip() == "YOU SAID: HI THERE"
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps({"question": f"q{i}"}) for i in range(5)))
    batch = cli(
        "flow",
        "run",
        "shout",
        "-d",
        str(folder),
        "-c",
        str(config),
        "--home",
        str(tmp_path),
        "--input-file",
        str(items),
    )
    assert batch.returncode == 0, batch.stderr
    assert [json.loads(line) for line in batch.stdout.splitlines()] == [f"YOU SAID: Q{i}" for i in range(5)]
