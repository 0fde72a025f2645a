"""POST /modelcache answers as ModelCache does, for its README clients (double-encoded JSON) and plain
JSON bodies; /api/cache is the clean API. Served by `datapilot cache serve`'s app, in process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datapilot.core.config import Settings
from datapilot.server.cache_api import create_cache_app

SYSTEM = {"role": "system", "content": "You are a code assistant. Give neutral, harmless answers."}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path,
        cache={"embedders": {"default": {"kind": "hash"}}, "defaults": {"threshold_short": 0.6, "margin": 0.0}},
    )
    with TestClient(create_cache_app(settings)) as c:
        yield c


def mc(client: TestClient, data: Any, double: bool = True) -> dict[str, Any]:
    """As ModelCache's README does it: requests.post(url, json=json.dumps(data))."""
    body = json.dumps(json.dumps(data)) if double else json.dumps(data)
    resp = client.post("/modelcache", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    return dict(resp.json())


def query(question: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}]


@pytest.mark.parametrize("double", [True, False])
def test_insert_query_remove_round_trip(client: TestClient, double: bool) -> None:
    scope = {"model": "CODEGPT-1008"}
    chat_info = [{"query": query("Who are you?"), "answer": "I am a code assistant."}]
    ins = mc(client, {"type": "insert", "scope": scope, "chat_info": chat_info}, double)
    assert ins["errorCode"] == 0 and ins["writeStatus"] == "success" and ins["errorDesc"] == ""
    hit = mc(client, {"type": "query", "scope": scope, "query": query("who are you")}, double)
    assert hit["errorCode"] == 0 and hit["cacheHit"] is True
    assert hit["answer"] == "I am a code assistant." and hit["hit_query"] == "Who are you?"
    assert hit["delta_time"].endswith("s")
    miss = mc(client, {"type": "query", "scope": scope, "query": query("How do I sort a list in Go?")}, double)
    assert miss["errorCode"] == 0 and miss["cacheHit"] is False and miss["answer"] == ""
    removed = mc(
        client, {"type": "remove", "scope": scope, "remove_type": "delete_by_id", "id_list": ins["id_list"]}, double
    )
    assert removed["errorCode"] == 0 and removed["response"]["status"] == "success"
    assert mc(client, {"type": "query", "scope": scope, "query": query("Who are you?")})["cacheHit"] is False


def test_truncate_by_model_touches_one_scope(client: TestClient) -> None:
    for model in ("a", "b"):
        mc(
            client,
            {
                "type": "insert",
                "scope": {"model": model},
                "chat_info": [{"query": query("What is a monad?"), "answer": f"monad {model}"}],
            },
        )
    out = mc(client, {"type": "remove", "scope": {"model": "a"}, "remove_type": "truncate_by_model"})
    assert out["errorCode"] == 0 and out["writeStatus"] == "success"
    assert (
        mc(client, {"type": "query", "scope": {"model": "a"}, "query": query("What is a monad?")})["cacheHit"] is False
    )
    assert (
        mc(client, {"type": "query", "scope": {"model": "b"}, "query": query("What is a monad?")})["answer"]
        == "monad b"
    )


def test_register(client: TestClient) -> None:
    assert mc(client, {"type": "register", "scope": {"model": "new"}})["response"] == "create_success"
    assert mc(client, {"type": "register", "scope": {"model": "new"}})["response"] == "already_exists"


def test_error_codes_and_bad_input_changes_nothing(client: TestClient) -> None:
    raw = client.post("/modelcache", content=b"{not json", headers={"Content-Type": "application/json"}).json()
    assert raw["errorCode"] == 101 and raw["cacheHit"] is False
    assert mc(client, ["a list"])["errorCode"] == 101
    assert mc(client, {"type": "select", "scope": {"model": "m"}})["errorCode"] == 102
    assert mc(client, {"type": "query", "scope": {"nomodel": 1}, "query": query("x")})["errorCode"] == 103
    assert mc(client, {"type": "query", "scope": {"model": "m"}, "query": [{"role": "user"}]})["errorCode"] == 201
    bad_insert = {
        "type": "insert",
        "scope": {"model": "m"},
        "chat_info": [{"query": query("good"), "answer": "fine"}, {"query": query("bad")}],
    }
    out = mc(client, bad_insert)
    assert out["errorCode"] == 301 and out["writeStatus"] == "exception"
    assert mc(client, {"type": "remove", "scope": {"model": "m"}, "remove_type": "drop_all"})["errorCode"] == 401
    assert (
        mc(client, {"type": "remove", "scope": {"model": "m"}, "remove_type": "delete_by_id", "id_list": "1"})[
            "errorCode"
        ]
        == 401
    )
    assert client.get("/api/cache/stats", params={"model": "m"}).json()["entries"] == 0


def test_clean_api(client: TestClient) -> None:
    scope = {"model": "m", "tenant": "t1"}
    ids = client.post(
        "/api/cache/insert",
        json={
            "scope": scope,
            "entries": [
                {"messages": query("How do I read a file in Python?"), "answer": "open()"},
                {"messages": query("How do I read a file in Rust?"), "answer": "std::fs::read_to_string"},
            ],
        },
    ).json()["ids"]
    assert len(ids) == 2
    hit = client.post("/api/cache/query", json={"scope": scope, "messages": query("how do i read a file in python")})
    assert hit.json()["hit"] and hit.json()["answer"] == "open()"
    other_tenant = client.post(
        "/api/cache/query",
        json={"scope": {"model": "m", "tenant": "t2"}, "messages": query("How do I read a file in Python?")},
    )
    assert not other_tenant.json()["hit"]
    stats = client.get("/api/cache/stats", params=scope).json()
    assert stats["entries"] == 2 and stats["queries"] == 1 and stats["hits"] == 1
    assert stats["latency_p50_ms"] is not None and stats["latency_p99_ms"] is not None
    log = client.get("/api/cache/log", params={"model": "m", "tenant": "t1"}).json()["data"]
    assert log[0]["hit"] and log[0]["hit_query"] == "How do I read a file in Python?"
    assert [e["id"] for e in client.get("/api/cache/entries", params=scope).json()["data"]] == ids
    put = client.put("/api/cache/settings", json={"scope": scope, "settings": {"ttl_s": 60, "max_entries": 10}})
    assert put.status_code == 200 and put.json()["ttl_s"] == 60
    assert client.get("/api/cache/settings", params={"model": "m"}).json()["ttl_s"] is None
    bad = client.put("/api/cache/settings", json={"scope": scope, "settings": {"eviction": "random"}})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/api/cache/remove", json={"scope": scope, "ids": [ids[0]]}).json()["removed"] == 1
    assert client.post("/api/cache/truncate", json={"scope": scope}).json()["removed"] == 1
    assert {"model": "m", "tenant": "t1"} in client.get("/api/cache/scopes").json()["data"]
    missing = client.post("/api/cache/query", json={"scope": scope})
    assert missing.status_code == 400


def test_odd_questions_are_served_or_refused_whole(client: TestClient) -> None:
    scope = {"model": "odd"}
    # Emoji and mixed scripts are questions like any other: stored and served.
    mixed = "🍕 披萨 pizza: どこで best ピザ in 東京?"
    ins = mc(client, {"type": "insert", "scope": scope, "chat_info": [{"query": query(mixed), "answer": "A"}]})
    assert ins["errorCode"] == 0
    assert mc(client, {"type": "query", "scope": scope, "query": query(mixed)})["answer"] == "A"
    # A 100k-character message is stored and served; one over the limit is refused with nothing stored.
    long = "why " * 25_000
    ok = mc(client, {"type": "insert", "scope": scope, "chat_info": [{"query": query(long), "answer": "L"}]})
    assert ok["errorCode"] == 0
    assert mc(client, {"type": "query", "scope": scope, "query": query(long)})["answer"] == "L"
    # Not the same text: the verifier compares the two (its alignments are bounded, so this takes no time).
    assert mc(client, {"type": "query", "scope": scope, "query": query("how " + long)})["answer"] == "L"
    # The same for Chinese, which also goes through the lexical channel (its terms, its index).
    long_zh = "天空为什么是蓝色的晚霞为什么是红色的" * 5_000
    ok = mc(client, {"type": "insert", "scope": scope, "chat_info": [{"query": query(long_zh), "answer": "Z"}]})
    assert ok["errorCode"] == 0
    assert mc(client, {"type": "query", "scope": scope, "query": query(long_zh)})["answer"] == "Z"
    assert mc(client, {"type": "query", "scope": scope, "query": query(long_zh[2:])})["answer"] == "Z"
    too_long = [{"query": query("fine"), "answer": "F"}, {"query": query("x" * 250_000), "answer": "X"}]
    refused = mc(client, {"type": "insert", "scope": scope, "chat_info": too_long})
    assert refused["errorCode"] == 301 and "longer than" in refused["errorDesc"]
    assert client.get("/api/cache/stats", params={"model": "odd"}).json()["entries"] == 3
    # Empty or whitespace-only questions: an error in ModelCache's shape, nothing stored.
    for blank in ("", "   ", "\u3000\n"):
        q = mc(client, {"type": "query", "scope": scope, "query": query(blank)})
        assert q["errorCode"] != 0 and q["cacheHit"] is False
        w = mc(client, {"type": "insert", "scope": scope, "chat_info": [{"query": query(blank), "answer": "B"}]})
        assert w["errorCode"] == 301
    assert client.get("/api/cache/stats", params={"model": "odd"}).json()["entries"] == 3
    assert client.get("/health").status_code == 200
