"""The official ``openai`` client against a live DataPilot on the embedded models."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator

import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_models_list(client: OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {CHAT_MODEL, EMBED_MODEL, "echo", "broken"} <= set(models)
    assert models[CHAT_MODEL].owned_by == "datapilot"
    assert models[CHAT_MODEL].model_extra["status"] == "ready"
    assert models["broken"].model_extra["status"] == "failed"
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL


@pytest.mark.slow
def test_chat_real_model_usage_and_timing_headers(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of Italy?"}],
        max_tokens=24,
        temperature=0,
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert "Rome" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 20  # the few-shot transcript is part of the prompt
    assert 1 <= usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert float(raw.headers["x-datapilot-ttft-ms"]) > 0
    assert float(raw.headers["x-datapilot-latency-ms"]) >= float(raw.headers["x-datapilot-ttft-ms"])
    assert float(raw.headers["x-datapilot-tokens-per-second"]) > 0


@pytest.mark.slow
def test_chat_stream_real_model(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of Spain?"}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3, "tokens arrive one by one, not in a single chunk"
    assert "Madrid" in text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert 1 <= chunks[-1].usage.completion_tokens <= 24
    # The same answer streamed and not streamed (greedy decoding).
    whole = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of Spain?"}],
        max_tokens=24,
        temperature=0,
    )
    assert whole.choices[0].message.content == text
    assert whole.usage.completion_tokens == chunks[-1].usage.completion_tokens


@pytest.mark.slow
def test_completions_real_model_stop_and_length(client: OpenAI) -> None:
    out = client.completions.create(model=CHAT_MODEL, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 12
    assert out.choices[0].text.strip().startswith("6")
    stopped = client.completions.create(
        model=CHAT_MODEL, prompt="1, 2, 3, 4, 5,", max_tokens=40, temperature=0, stop=[" 9"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text.rstrip(",").strip().endswith("8")
    assert " 9" not in stopped.choices[0].text
    streamed = client.completions.create(
        model=CHAT_MODEL, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == out.choices[0].text


@pytest.mark.slow
def test_seed_makes_sampling_repeatable(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        return (
            client.completions.create(
                model=CHAT_MODEL, prompt="Once upon a time", max_tokens=16, temperature=1.0, seed=seed
            )
            .choices[0]
            .text
        )

    assert sample(1234) == sample(1234)
    assert len({sample(s) for s in range(4)}) > 1


def test_embeddings_float_and_base64(client: OpenAI) -> None:
    texts = ["A cat sits on the mat.", "A cat is sitting on a mat.", "The stock market fell sharply."]
    out = client.embeddings.create(model=EMBED_MODEL, input=texts)
    vectors = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > 0.8 > vectors[0] @ vectors[2]
    assert out.usage.prompt_tokens > 0
    single = client.embeddings.create(model=EMBED_MODEL, input=texts[0])
    assert np.allclose(single.data[0].embedding, vectors[0], atol=1e-5)
    b64 = client.with_options().embeddings.with_raw_response.create(
        model=EMBED_MODEL, input=texts, encoding_format="base64"
    )
    raw = b64.http_response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(raw), dtype=np.float32)
    assert np.allclose(decoded, vectors[0], atol=1e-6)


def test_scripted_model_max_tokens_and_usage(client: OpenAI) -> None:
    out = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three four five"}], max_tokens=3
    )
    assert out.choices[0].message.content == "You said: one"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3


def test_health_and_metrics(server: Server, client: OpenAI) -> None:
    import httpx

    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    health = httpx.get(f"{server.url}/health").json()
    assert health["models"]["broken"] == {"status": "failed", "error": "weights file is corrupt (test)"}
    assert health["models"][CHAT_MODEL]["status"] == "ready"
    text = httpx.get(f"{server.url}/metrics").text
    assert 'datapilot_requests_total{kind="chat",model="echo",status="ok"}' in text
    assert 'datapilot_model_ready{model="broken"} 0.0' in text
    assert "datapilot_request_latency_seconds_bucket" in text
    assert "datapilot_first_token_latency_seconds_count" in text


@pytest.mark.slow
def test_disconnect_stops_generation(server: Server, client: OpenAI) -> None:
    import httpx

    # Counting goes on for as long as it is allowed to: 3,000 tokens is about a minute of work.
    with httpx.stream(
        "POST",
        f"{server.v1}/completions",
        timeout=60,
        json={"model": CHAT_MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 3000, "temperature": 0, "stream": True},
    ) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        got = [line for _, line in zip(range(6), lines, strict=False)]
        assert any(line.startswith("data: {") for line in got)
    # Generation runs on one thread per model: if it had not stopped, this would wait behind it.
    started = time.perf_counter()
    out = client.completions.create(model=CHAT_MODEL, prompt="Hello", max_tokens=4, temperature=0)
    assert out.usage.completion_tokens >= 1
    assert time.perf_counter() - started < 20
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'datapilot_requests_total{{kind="completion",model="{CHAT_MODEL}",status="cancelled"}}' in metrics


def test_disconnect_cancels_non_streaming_request(server: Server) -> None:
    import httpx

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.v1}/chat/completions",
            timeout=0.5,
            json={"model": "slow", "messages": [{"role": "user", "content": "go"}]},
        )
    needle = 'datapilot_requests_total{kind="chat",model="slow",status="cancelled"}'
    deadline = time.monotonic() + 5
    while needle not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline, "the server kept generating after the client left"
        time.sleep(0.1)


def test_legacy_api_prefix(server: Server, make_client: Callable[..., OpenAI]) -> None:
    legacy = make_client(f"{server.url}/api/v1")
    out = legacy.chat.completions.create(model="echo", messages=[{"role": "user", "content": "ping"}])
    assert out.choices[0].message.content == "You said: ping"
    assert "echo" in {m.id for m in legacy.models.list()}


def test_openai_0x_client_against_api_v1(server: Server) -> None:
    """DB-GPT-era clients used openai 0.x's ChatCompletion with api_base=.../api/v1."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    legacy = Path(__file__).resolve().parents[1] / ".venv" / "legacy-openai"
    assert (legacy / "openai").is_dir(), "run scripts/install.sh --dev (make test does) to install openai 0.28"
    code = f"""
import openai
assert openai.__version__.startswith("0."), openai.__version__
openai.api_key = "unused"
openai.api_base = "{server.url}/api/v1"
r = openai.ChatCompletion.create(model="echo", messages=[{{"role": "user", "content": "legacy hello"}}])
print(r["choices"][0]["message"]["content"])
chunks = openai.ChatCompletion.create(model="echo", messages=[{{"role": "user", "content": "a b"}}], stream=True)
print("".join(c["choices"][0]["delta"].get("content", "") for c in chunks))
e = openai.Embedding.create(model="echo", input=["x"])
print(len(e["data"][0]["embedding"]))
"""
    env = {**os.environ, "PYTHONPATH": str(legacy)}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["You said: legacy hello", "You said: a b", "32"]


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    err = exc.value.body
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "no-such-model" in err["message"] and CHAT_MODEL in err["message"]


def test_failed_model_is_503_with_reason(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 503
    assert "weights file is corrupt (test)" in exc.value.body["message"]
