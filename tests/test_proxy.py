"""The ``openai_compat`` backend against a second DataPilot server (a real HTTP hop), and API keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.conftest import CHAT_MODEL, EMBED_MODEL, PROXY_KEY, Server, assert_healthy


@pytest.fixture(scope="module")
def proxy(proxy_server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=proxy_server.v1, api_key=PROXY_KEY, max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def direct(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


@pytest.mark.slow
def test_proxy_streams_chunk_by_chunk_and_matches_upstream(proxy: OpenAI, direct: OpenAI) -> None:
    question = [{"role": "user", "content": "What is the capital of Germany?"}]
    chunks = list(
        proxy.chat.completions.create(
            model="up-gemma",
            messages=question,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3, "the proxy passes chunks through, it does not buffer the answer"
    assert all(c.model == "up-gemma" for c in chunks)
    upstream = direct.chat.completions.create(model=CHAT_MODEL, messages=question, max_tokens=20, temperature=0)
    assert "".join(pieces) == upstream.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == upstream.usage.completion_tokens
    whole = proxy.chat.completions.create(model="up-gemma", messages=question, max_tokens=20, temperature=0)
    assert whole.choices[0].message.content == upstream.choices[0].message.content
    assert whole.usage.prompt_tokens == upstream.usage.prompt_tokens


def test_proxy_completions_and_embeddings(proxy: OpenAI, direct: OpenAI) -> None:
    out = proxy.completions.create(model="up-echo", prompt="alpha beta", max_tokens=2)
    assert out.choices[0].text == "You said:" and out.choices[0].finish_reason == "length"
    via = proxy.embeddings.create(model="up-embed", input=["proxy me", "and me"])
    ref = direct.embeddings.create(model=EMBED_MODEL, input=["proxy me", "and me"])
    assert np.allclose([d.embedding for d in via.data], [d.embedding for d in ref.data], atol=1e-6)


def test_upstream_errors_are_mapped(proxy: OpenAI, proxy_server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        proxy.chat.completions.create(model="up-missing", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        proxy.chat.completions.create(model="up-echo", messages=[{"role": "user", "content": "x"}], max_tokens=10**9)
    assert bad.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.APIStatusError) as dead:
        proxy.chat.completions.create(model="up-dead", messages=[{"role": "user", "content": "x"}])
    assert dead.value.status_code == 502
    assert "cannot reach upstream" in dead.value.body["message"]
    with pytest.raises(openai.APIStatusError) as dead_stream:
        proxy.chat.completions.create(model="up-dead", messages=[{"role": "user", "content": "x"}], stream=True)
    assert dead_stream.value.status_code == 502
    assert_healthy(proxy_server)


def test_api_keys(proxy_server: Server, make_client: Callable[..., OpenAI]) -> None:
    for key in (None, "sk-wrong"):
        client = make_client(proxy_server.v1, key or "placeholder")
        if key is None:
            client = client.with_options(default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as exc:
            client.models.list()
        assert exc.value.status_code == 401
        assert exc.value.body["type"] == "invalid_request_error"
    legacy = make_client(f"{proxy_server.url}/api/v1", "sk-wrong")
    with pytest.raises(openai.AuthenticationError):
        legacy.models.list()
    ok = make_client(proxy_server.v1, PROXY_KEY)
    assert "up-gemma" in {m.id for m in ok.models.list()}
    import httpx

    assert httpx.get(f"{proxy_server.url}/health").status_code == 200  # health stays open


def _requests_and_tokens(srv: Server, model: str) -> tuple[dict[str, float], float]:
    """The ``/metrics`` request counts by status, and the completion tokens, of one model."""
    import re

    import httpx

    text = httpx.get(srv.url + "/metrics", headers={"authorization": f"Bearer {PROXY_KEY}"}, timeout=30).text
    counts: dict[str, float] = {}
    for m in re.finditer(r'^datapilot_requests_total\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("model") == model:
            counts[labels["status"]] = counts.get(labels["status"], 0) + float(m.group(2))
    found = re.search(rf'^datapilot_completion_tokens_total\{{model="{model}"\}} (\S+)$', text, re.M)
    return counts, float(found.group(1)) if found else 0.0


def test_proxied_streams_are_logged_and_counted_as_what_happened(proxy: OpenAI, proxy_server: Server) -> None:
    """A stream proxied to the upstream and read to its end is ``ok`` with its tokens, not ``cancelled``
    with none, with or without the upstream's usage."""
    before, tokens_before = _requests_and_tokens(proxy_server, "up-echo")
    for usage in (True, False):
        extra = {"stream_options": {"include_usage": True}} if usage else {}
        chunks = list(
            proxy.chat.completions.create(
                model="up-echo", messages=[{"role": "user", "content": "one two three"}], stream=True, **extra
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        if usage:
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    after, tokens_after = _requests_and_tokens(proxy_server, "up-echo")
    assert after.get("ok", 0) - before.get("ok", 0) == 2
    assert after.get("cancelled", 0) == before.get("cancelled", 0)
    assert tokens_after - tokens_before > 0
