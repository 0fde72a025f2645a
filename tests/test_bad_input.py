"""Bad input gets a clear 4xx in OpenAI's error shape, and the server stays healthy after each."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server, assert_healthy

USER = [{"role": "user", "content": "hi"}]

CASES: list[tuple[str, str, Any, int, str | None, str]] = [
    # (id, path, body, status, param, words the message must contain)
    (
        "unknown-role",
        "/chat/completions",
        {"model": "echo", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages.0.role",
        "unknown role 'wizard'",
    ),
    ("empty-messages", "/chat/completions", {"model": "echo", "messages": []}, 400, "messages", "at least 1"),
    ("missing-messages", "/chat/completions", {"model": "echo"}, 400, "messages", "Missing required"),
    ("messages-not-list", "/chat/completions", {"model": "echo", "messages": "hello"}, 400, "messages", ""),
    (
        "missing-content",
        "/chat/completions",
        {"model": "echo", "messages": [{"role": "user"}]},
        400,
        "messages.0.content",
        "required",
    ),
    (
        "image-part",
        "/chat/completions",
        {"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "messages.0.content.0",
        "only text parts",
    ),
    (
        "temperature-type",
        "/chat/completions",
        {"model": "echo", "messages": USER, "temperature": "hot"},
        400,
        "temperature",
        "",
    ),
    (
        "temperature-range",
        "/chat/completions",
        {"model": "echo", "messages": USER, "temperature": 3},
        400,
        "temperature",
        "less than or equal to 2",
    ),
    (
        "max-tokens-zero",
        "/chat/completions",
        {"model": "echo", "messages": USER, "max_tokens": 0},
        400,
        "max_tokens",
        "greater than or equal to 1",
    ),
    (
        "max-tokens-string",
        "/chat/completions",
        {"model": "echo", "messages": USER, "max_tokens": "10"},
        400,
        "max_tokens",
        "",
    ),
    (
        "max-tokens-huge-scripted",
        "/chat/completions",
        {"model": "echo", "messages": USER, "max_tokens": 10**9},
        400,
        "max_tokens",
        "maximum context length",
    ),
    (
        "max-tokens-huge-gguf",
        "/chat/completions",
        {"model": CHAT_MODEL, "messages": USER, "max_tokens": 10**9},
        400,
        "max_tokens",
        "maximum context length",
    ),
    ("stream-not-bool", "/chat/completions", {"model": "echo", "messages": USER, "stream": "yes"}, 400, "stream", ""),
    ("n-two", "/chat/completions", {"model": "echo", "messages": USER, "n": 2}, 400, "n", "only n=1"),
    (
        "unknown-arg",
        "/chat/completions",
        {"model": "echo", "messages": USER, "frobnicate": True},
        400,
        "frobnicate",
        "Unrecognized request argument",
    ),
    (
        "too-many-stops",
        "/chat/completions",
        {"model": "echo", "messages": USER, "stop": list("abcde")},
        400,
        "stop",
        "at most 4",
    ),
    (
        "tools",
        "/chat/completions",
        {"model": "echo", "messages": USER, "tools": [{"type": "function"}]},
        400,
        "tools.0",
        "must be {'type': 'function', 'function'",
    ),
    (
        "logprobs",
        "/chat/completions",
        {"model": "echo", "messages": USER, "top_logprobs": 3},
        400,
        "top_logprobs",
        "needs logprobs",
    ),
    (
        "chat-on-embedding-model",
        "/chat/completions",
        {"model": EMBED_MODEL, "messages": USER},
        400,
        "model",
        "does not support chat",
    ),
    ("completion-prompt-list", "/completions", {"model": "echo", "prompt": ["a", "b"]}, 400, "prompt", "exactly one"),
    ("completion-token-ids", "/completions", {"model": "echo", "prompt": [1, 2, 3]}, 400, "prompt", ""),
    ("embed-empty-list", "/embeddings", {"model": EMBED_MODEL, "input": []}, 400, "input", "empty"),
    ("embed-empty-string", "/embeddings", {"model": EMBED_MODEL, "input": ""}, 400, "input", "empty"),
    (
        "embed-bad-format",
        "/embeddings",
        {"model": EMBED_MODEL, "input": "x", "encoding_format": "hex"},
        400,
        "encoding_format",
        "",
    ),
    (
        "embed-dimensions",
        "/embeddings",
        {"model": EMBED_MODEL, "input": "x", "dimensions": 64},
        400,
        "dimensions",
        "384-dimensional",
    ),
    (
        "embed-on-chat-model",
        "/embeddings",
        {"model": CHAT_MODEL, "input": "x"},
        400,
        "model",
        "does not support embedding",
    ),
    ("body-not-object", "/chat/completions", [1, 2, 3], 400, None, "JSON object"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_request(server: Server, path: str, body: Any, status: int, param: str | None, words: str) -> None:
    resp = httpx.post(f"{server.v1}{path}", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert words in err["message"]
    assert_healthy(server)


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"model": "echo", "messages": [', b"\xff\xfe"])
def test_malformed_json_is_400(server: Server, raw: bytes) -> None:
    resp = httpx.post(
        f"{server.v1}/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=10
    )
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert_healthy(server)


def test_huge_body_is_413(server: Server) -> None:
    big = "x" * (9 * 1024 * 1024)
    resp = httpx.post(
        f"{server.v1}/chat/completions",
        timeout=30,
        json={"model": "echo", "messages": [{"role": "user", "content": big}]},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"
    assert_healthy(server)


def test_unknown_route_and_method(server: Server) -> None:
    resp = httpx.post(f"{server.v1}/no/such/route", json={})
    assert resp.status_code == 404 and resp.json()["error"]["message"]
    resp = httpx.get(f"{server.v1}/chat/completions")
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "invalid_request_error"


def test_streaming_request_error_keeps_its_status(server: Server) -> None:
    """A bad streaming request fails before the stream starts, with its status, not as a 200 stream."""
    resp = httpx.post(
        f"{server.v1}/chat/completions",
        timeout=10,
        json={"model": "echo", "messages": USER, "max_tokens": 10**9, "stream": True},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"
    resp = httpx.post(
        f"{server.v1}/chat/completions", timeout=10, json={"model": "broken", "messages": USER, "stream": True}
    )
    assert resp.status_code == 503


def test_uploads_have_their_own_body_limit(server: Server) -> None:
    """A 9 MB CSV is over the 8 MB limit for API bodies but within the upload limit."""
    rows = "".join(f"{i},{i * 7 % 1000},name-{i:08d}\n" for i in range(360_000))
    csv_bytes = ("id,value,label\n" + rows).encode()
    assert 8 * 1024 * 1024 < len(csv_bytes) < 64 * 1024 * 1024
    resp = httpx.post(f"{server.url}/api/datasources/upload?filename=big_upload.csv&name=big_upload",
                      content=csv_bytes, timeout=120)
    assert resp.status_code == 200, resp.text[:300]
    rows_back = httpx.post(f"{server.url}/api/datasources/big_upload/query", timeout=60,
                           json={"sql": "SELECT count(*) AS n FROM big_upload"})
    assert rows_back.status_code == 200, rows_back.text[:300]
    httpx.delete(f"{server.url}/api/datasources/big_upload", timeout=30)
    assert_healthy(server)
