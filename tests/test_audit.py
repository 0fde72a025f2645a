"""The audit log: one record per API request, with what deeper layers noted (model, SQL run, knowledge
space, privacy kinds and counts), never a key, prompt, answer or personal data; rotation by size, the
admin API and ``datapilot audit show``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from datapilot.core.audit import audit_append, audit_begin, audit_end, audit_note
from datapilot.core.config import ModelConfig, Settings
from datapilot.server.audit import AuditLog, key_fingerprint, log_files, read_records
from datapilot.server.roles import standalone_app

KEY = "sk-audit-secret-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
HASHED = {"kind": "hash"}
EMAIL, PHONE = "zhang.san@example.com", "138 1234 5678"
PROMPT = "tell me about the quarterly numbers please"


def settings(home: Path, **audit: Any) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "models": [
                ModelConfig(name="echo", backend="scripted"),
                ModelConfig(name="masked", backend="scripted", privacy="mask"),
                ModelConfig(name="blocked", backend="scripted", privacy="block"),
            ],
            "server": {"api_keys": [KEY]},
            "cache": {"enabled": False},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED},
            "audit": audit,
        }
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    cfg = settings(home)
    with TestClient(standalone_app(cfg)) as c:
        yield c


def records(client: TestClient, **filters: Any) -> list[dict[str, Any]]:
    audit: AuditLog = client.app.state.audit  # type: ignore[attr-defined]
    return audit.read(limit=10_000, **filters)


def last(client: TestClient, route: str) -> dict[str, Any]:
    found = records(client, route=route)
    assert found, f"no record for {route}"
    return found[0]


def raw_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in log_files(home / "audit"))


def test_a_chat_completion_is_recorded(client: TestClient) -> None:
    resp = client.post(
        "/v1/chat/completions",
        headers={**AUTH, "X-Tenant": "acme"},
        json={"model": "echo", "messages": [{"role": "user", "content": PROMPT}]},
    )
    assert resp.status_code == 200
    rec = last(client, "/v1/chat/completions")
    assert rec["method"] == "POST" and rec["status"] == 200 and rec["model"] == "echo"
    assert rec["key"] == key_fingerprint(KEY) and len(rec["key"]) == 8 and rec["tenant"] == "acme"
    assert rec["request_id"] == resp.headers["x-request-id"]
    assert rec["ts"].endswith("Z") and rec["duration_ms"] >= 0
    assert "error" not in rec and "sql" not in rec and "privacy" not in rec


def test_a_data_query_records_the_sql_actually_run(client: TestClient) -> None:
    resp = client.post("/api/datasources/sample/query", headers=AUTH, json={"sql": "SELECT name FROM regions"})
    assert resp.status_code == 200, resp.text
    rec = last(client, "/api/datasources/{name}/query")
    assert rec["data_source"] == "sample" and rec["status"] == 200 and rec["tenant"] is None
    assert len(rec["sql"]) == 1 and rec["sql"][0].startswith("SELECT name FROM regions") and "LIMIT" in rec["sql"][0]
    refused = client.post("/api/datasources/sample/query", headers=AUTH, json={"sql": "DELETE FROM regions"})
    assert refused.status_code == 400
    rec = last(client, "/api/datasources/{name}/query")
    # refused by the guard: nothing ran
    assert rec["status"] == 400 and rec["error"] == "read_only_violation" and "sql" not in rec


def test_a_knowledge_query_records_the_space(client: TestClient) -> None:
    assert client.post("/api/knowledge/spaces", headers=AUTH, json={"name": "handbook"}).status_code == 201
    resp = client.post("/api/knowledge/spaces/handbook/query", headers=AUTH, json={"query": PROMPT})
    assert resp.status_code == 200, resp.text
    rec = last(client, "/api/knowledge/spaces/{space}/query")
    assert rec["knowledge_space"] == "handbook" and rec["status"] == 200


def test_refused_requests_are_recorded_without_the_key(client: TestClient) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": PROMPT}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 401
    rec = last(client, "/v1/chat/completions")
    assert rec["status"] == 401 and rec["key"] is None and rec["error"] == "missing_api_key"
    wrong = "sk-wrong-guess-5678"
    assert (
        client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    )
    rec = last(client, "/v1/chat/completions")
    assert rec["status"] == 401 and rec["key"] == key_fingerprint(wrong) and "model" not in rec
    assert wrong.encode() not in raw_bytes(client.app.state.services.settings.home)  # type: ignore[attr-defined]


def test_masked_and_blocked_requests_record_kinds_and_counts(client: TestClient) -> None:
    text = f"mail {EMAIL} or call {PHONE}, again {EMAIL}"
    resp = client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": "masked", "messages": [{"role": "user", "content": text}]}
    )
    assert resp.status_code == 200 and EMAIL in resp.json()["choices"][0]["message"]["content"]  # restored
    rec = last(client, "/v1/chat/completions")
    assert rec["model"] == "masked"
    assert rec["privacy"] == [
        {"model": "masked", "operation": "chat", "action": "masked", "counts": {"email": 2, "phone": 1}}
    ]
    blocked = client.post("/v1/completions", headers=AUTH, json={"model": "blocked", "prompt": text})
    assert blocked.status_code == 400
    rec = last(client, "/v1/completions")
    assert rec["error"] == "pii_blocked" and rec["privacy"][0]["action"] == "blocked"
    assert rec["privacy"][0]["counts"] == {"email": 2, "phone": 1}


def test_no_key_prompt_answer_or_personal_data_in_the_files(client: TestClient, home: Path) -> None:
    client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": "masked", "messages": [{"role": "user", "content": EMAIL}]}
    )
    records(client)  # flushed
    data = raw_bytes(home)
    assert data.count(b"\n") >= 5
    for secret in (KEY, PROMPT, "You said", EMAIL, PHONE, "zhang.san"):
        assert secret.encode() not in data, secret
    assert all(json.loads(line) for line in data.splitlines())


def test_health_metrics_and_the_ui_are_not_recorded(client: TestClient) -> None:
    before = len(records(client))
    client.get("/health")
    client.get("/metrics")
    client.get("/")
    assert len(records(client)) == before


def test_the_admin_api_filters_and_needs_a_key(client: TestClient) -> None:
    assert client.get("/api/audit").status_code == 401
    assert client.get("/api/audit", headers={"Authorization": "Bearer nope"}).status_code == 401
    resp = client.get("/api/audit", headers=AUTH, params={"route": "/v1/chat", "model": "masked"})
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data and all(r["model"] == "masked" and r["route"] == "/v1/chat/completions" for r in data)
    stamps = [r["ts"] for r in data]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    refused = client.get("/api/audit", headers=AUTH, params={"status": 401, "limit": 1}).json()["data"]
    assert len(refused) == 1 and refused[0]["status"] == 401
    mine = client.get("/api/audit", headers=AUTH, params={"key": key_fingerprint(KEY), "since": "1h"}).json()["data"]
    assert mine and all(r["key"] == key_fingerprint(KEY) for r in mine)
    assert client.get("/api/audit", headers=AUTH, params={"since": "2999-01-01"}).json()["data"] == []
    assert client.get("/api/audit", headers=AUTH, params={"since": "yesterday"}).status_code == 400
    # the admin's reading is on the record too
    assert records(client, route="/api/audit")[0]["status"] == 400


def test_audit_show_prints_records(client: TestClient, home: Path) -> None:
    from datapilot.cli.main import app

    records(client)  # flushed
    result = CliRunner().invoke(app, ["audit", "show", "--home", str(home), "--json", "--limit", "3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == 3 and all("route" in r and "status" in r for r in lines)
    blocked = CliRunner().invoke(app, ["audit", "show", "--home", str(home), "--route", "/v1/completions", "--json"])
    assert blocked.exit_code == 0 and json.loads(blocked.output.splitlines()[0])["error"] == "pii_blocked"
    table = CliRunner().invoke(app, ["audit", "show", "--home", str(home), "--limit", "2"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "/api/audit" in table.output and "status" in table.output
    none = CliRunner().invoke(app, ["audit", "show", "--home", str(home), "--since", "2999-01-01"])
    assert none.exit_code == 0 and "no audit records match" in none.output


def test_rotation_keeps_n_files_and_queries_span_them(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, max_bytes=400, keep=2)
    for i in range(60):
        audit.record({"ts": time.time(), "request_id": f"r{i}", "method": "GET", "route": "/api/x", "status": 200})
    audit.flush()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.1.jsonl", "audit.2.jsonl", "audit.jsonl"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())
    found = read_records(tmp_path, limit=1000)
    ids = [int(r["request_id"][1:]) for r in found]
    assert ids == sorted(ids, reverse=True) and ids[0] == 59  # newest first, across the three files
    assert len(found) > len(read_records(tmp_path / "x")) and len(found) < 60  # the oldest were dropped
    assert len({p.name for p in log_files(tmp_path)}) == 3
    assert len(read_records(tmp_path, limit=5)) == 5
    audit.close_sync()
    # append-only: a new writer adds after what is there
    before = (tmp_path / "audit.jsonl").read_bytes()
    again = AuditLog(tmp_path, max_bytes=10_000, keep=2)
    again.record({"ts": time.time(), "request_id": "later", "route": "/api/x", "status": 200})
    again.close_sync()
    assert (tmp_path / "audit.jsonl").read_bytes().startswith(before)


def test_notes_outside_a_request_do_nothing_and_lists_append() -> None:
    audit_note(model="m")  # no request: nothing to add to, no error
    audit_append("sql", "SELECT 1")
    fields, token = audit_begin()
    try:
        audit_note(model="m", data_source=None)
        audit_append("sql", "SELECT 1")
        audit_append("sql", "SELECT 2")
    finally:
        audit_end(token)
    assert fields == {"model": "m", "sql": ["SELECT 1", "SELECT 2"]}


def test_audit_can_be_turned_off(tmp_path: Path) -> None:
    cfg = settings(tmp_path, enabled=False)
    with TestClient(standalone_app(cfg)) as c:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        assert c.post("/v1/chat/completions", headers=AUTH, json=body).status_code == 200
        assert c.get("/api/audit", headers=AUTH).status_code == 404
    assert not (tmp_path / "audit").exists()


def test_a_scene_records_the_model_it_chose(client: TestClient) -> None:
    resp = client.post("/api/chat", headers=AUTH, json={"scene": "chat", "question": "hello there", "stream": False})
    assert resp.status_code == 200, resp.text
    assert last(client, "/api/chat")["model"] == "echo"  # the request named none: the scene chose it


def test_a_tenant_key_is_recorded_by_its_id_and_tenant(client: TestClient, home: Path) -> None:
    from datapilot.core.keys import KeyStore

    keys = KeyStore.for_home(home)
    record, key = keys.create("acme", level="read")
    keys.close()
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=chat).status_code == 200
    rec = last(client, "/v1/chat/completions")
    assert rec["key"] == record.id and rec["tenant"] == "acme"
    assert key not in json.dumps(records(client))


def test_modelcache_records_the_tenant_an_admin_acts_for(tmp_path: Path) -> None:
    from datapilot.server.cache_api import create_cache_app

    cfg = settings(tmp_path)
    cfg.cache.enabled = True
    cfg.cache.embedders = {"default": cfg.knowledge.embedder}
    body = {
        "type": "insert",
        "scope": {"model": "echo", "tenant": "acme"},
        "chat_info": [{"query": "q", "answer": "a"}],
    }
    # `datapilot cache serve` (the cache alone) keeps the same audit log.
    with TestClient(create_cache_app(cfg)) as alone:
        assert alone.post("/modelcache", headers=AUTH, json=body).json()["errorCode"] == 0
        assert alone.post("/modelcache", json=body).status_code == 401
        audit: AuditLog = alone.app.state.audit  # type: ignore[attr-defined]
        found = audit.read(limit=10, route="/modelcache")
    assert [r["status"] for r in found] == [401, 200]
    assert (
        found[1]["tenant"] == "acme" and found[1]["cache_scope"] == "echo" and found[1]["key"] == key_fingerprint(KEY)
    )
