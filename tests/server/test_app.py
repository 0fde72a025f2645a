"""The assembled server: one embedder per embedding model shared by every part, the event schemas in
``/openapi.json``, streams through the one SSE writer, and parts that are off answering so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datapilot.cache import HashEmbedder, SentenceTransformerEmbedder
from datapilot.core.config import (
    CacheEmbedderConfig,
    CacheSettings,
    DataSettings,
    KnowledgeSection,
    ModelConfig,
    Settings,
)
from datapilot.core.events import parse_event
from datapilot.server.app import create_app
from datapilot.server.deps import Services

HASH = CacheEmbedderConfig(kind="hash")
HASH_64 = CacheEmbedderConfig(kind="hash", params={"dimension": 64})


def _services(app: Any) -> Services:
    svc: Services = app.state.services
    return svc


def _settings(tmp_path: Path, **over: Any) -> Settings:
    return Settings(home=tmp_path / "home", models=[ModelConfig(name="s", backend="scripted")], **over)


def test_one_minilm_for_the_cache_knowledge_data_and_agents(tmp_path: Path) -> None:
    """The defaults configure MiniLM three times (cache, knowledge, schema linking): one instance, built
    but not loaded until first use."""
    svc = _services(create_app(_settings(tmp_path)))
    assert svc.cache is not None and svc.knowledge is not None and svc.data is not None and svc.agents is not None
    embedder = svc.knowledge.knowledge.embedder
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert svc.cache.cache.embedder("default") is embedder
    assert svc.data.embedder is embedder
    assert svc.agents.memory is not None and svc.agents.memory.embedder is embedder


def test_distinct_models_stay_distinct_and_equal_ones_are_shared(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        cache=CacheSettings(embedders={"default": HASH, "alt": HASH_64}),
        knowledge=KnowledgeSection(embedder=HASH),
        data=DataSettings(embedder=CacheEmbedderConfig()),  # MiniLM for schema linking only
    )
    svc = _services(create_app(settings))
    assert svc.cache is not None and svc.knowledge is not None and svc.data is not None
    shared = svc.knowledge.knowledge.embedder
    assert isinstance(shared, HashEmbedder) and svc.cache.cache.embedder("default") is shared
    alt = svc.cache.cache.embedder("alt")
    assert isinstance(alt, HashEmbedder) and alt is not shared and alt.dimension == 64
    assert isinstance(svc.data.embedder, SentenceTransformerEmbedder)


def test_an_embedder_that_cannot_be_built_here_is_left_to_its_user(tmp_path: Path) -> None:
    """A cache embedder of kind ``datapilot`` without a model is refused when the cache uses it, as before."""
    settings = _settings(tmp_path, cache=CacheSettings(embedders={"default": CacheEmbedderConfig(kind="datapilot")}))
    svc = _services(create_app(settings))
    assert svc.cache is not None
    with pytest.raises(Exception, match="needs model"):
        svc.cache.cache.embedder("default")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = _settings(
        tmp_path,
        cache=CacheSettings(embedders={"default": HASH}),
        knowledge=KnowledgeSection(embedder=HASH),
        data=DataSettings(embedder=HASH),
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_streaming_routes_document_their_events_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"ChatEvent", "StepEvent", "ErrorEvent", "DoneEvent"} <= set(schemas)
    assert schemas["ChatEvent"]["discriminator"]["propertyName"] == "type"
    for path in ("/api/agents/run", "/api/knowledge/spaces/{space}/chat"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert content["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/ChatEvent"}, path


def test_knowledge_chat_streams_typed_events_through_the_writer(client: TestClient) -> None:
    assert client.post("/api/knowledge/spaces", json={"name": "empty"}).status_code == 201
    with client.stream("POST", "/api/knowledge/spaces/empty/chat", json={"question": "What is new?"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        events = _sse(resp.iter_lines())
    assert [e["type"] for e in events] == ["citations", "delta", "done"]
    assert events[0] == {"type": "citations", "citations": []}
    assert set(events[2]) == {"type", "answer", "cited", "citations", "finish_reason", "usage"}
    assert isinstance(events[2]["answer"], str) and events[1]["text"] == events[2]["answer"]
    assert [type(parse_event(e)).__name__ for e in events] == ["CitationsEvent", "DeltaEvent", "DoneEvent"]
    whole = client.post("/api/knowledge/spaces/empty/chat", json={"question": "What is new?", "stream": False})
    assert whole.json()["answer"] == events[2]["answer"]


def test_errors_before_a_stream_keep_their_http_status(client: TestClient) -> None:
    missing = client.post("/api/knowledge/spaces/nope/chat", json={"question": "anything?"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "space_not_found"
    empty = client.post("/api/knowledge/spaces/nope/chat", json={"question": " "})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "question"
    agents = client.post("/api/agents/run", json={"goal": "g", "datasource": "nope"})
    assert agents.status_code == 404


def test_openai_streams_keep_their_chunks_and_end_with_done(client: TestClient) -> None:
    body = {"model": "s", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200 and resp.headers["x-request-id"]
        chunks = _sse(resp.iter_lines())
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "metrics" in chunks[-1]


def test_a_part_that_is_off_answers_not_available(client: TestClient) -> None:
    app: Any = client.app
    svc = _services(app)
    data, svc.data = svc.data, None
    try:
        resp = client.get("/api/datasources")
        assert resp.status_code == 404
        assert resp.json()["error"]["message"] == "data sources are not available on this server"
    finally:
        svc.data = data
    assert client.get("/api/datasources").status_code == 200
