"""Shared checks for killing a model instance under load (process cluster and Ray runtime)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import openai
from openai import OpenAI


def kill_under_load(c: OpenAI, pool: ThreadPoolExecutor, model: str, kill: Callable[[], None]) -> float:
    """Eight requests run (four whole, four streamed) when ``kill`` kills one instance; three more
    arrive right after. Whole answers are all retried on a survivor; a stream that had started on the
    dead instance ends with a clear error. Returns when the kill happened (``time.monotonic``)."""

    def non_stream(i: int) -> str:
        out = c.completions.create(model=model, prompt=f"{i}, {i + 1}, {i + 2},", max_tokens=40, temperature=0)
        return out.choices[0].text

    def streamed(i: int) -> str:
        stream = c.completions.create(model=model, prompt=f"{i}, {i + 1},", max_tokens=40, temperature=0, stream=True)
        return "".join(ch.choices[0].text if ch.choices else "" for ch in stream)

    futures = [pool.submit(non_stream, i) for i in range(4)] + [pool.submit(streamed, i) for i in range(4)]
    time.sleep(1.0)  # requests are running on every instance
    kill()
    killed_at = time.monotonic()
    # Requests arriving now, before the instance is known to be dead, fail over to a survivor.
    after = [pool.submit(non_stream, 100 + i) for i in range(3)]
    _, pending = wait(futures + after, timeout=120)
    assert not pending, "a request hung after its instance was killed"
    for f in futures[:4] + after:
        assert f.result().strip(), "whole answers are retried on the surviving instance"
    for f in futures[4:]:
        exc = f.exception()
        assert exc is None or (isinstance(exc, openai.APIError) and "incomplete" in str(exc)), exc
    return killed_at


def concurrent_chats(c: OpenAI, model: str, n: int) -> None:
    """``n`` chat completions at once, each answered."""
    with ThreadPoolExecutor(n) as pool:
        outs = list(
            pool.map(
                lambda i: c.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"What is {i} plus {i}?"}],
                    max_tokens=8,
                    temperature=0,
                ),
                range(n),
            )
        )
    assert all(o.choices[0].message.content and o.usage.completion_tokens >= 1 for o in outs)


def stream_and_embed(c: OpenAI, chat_model: str, embed_model: str) -> None:
    """A streamed chat answer that knows Madrid, and unit-length embeddings."""
    stream = c.chat.completions.create(
        model=chat_model,
        messages=[{"role": "user", "content": "What is the capital of Spain?"}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    assert "Madrid" in "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    emb = c.embeddings.create(model=embed_model, input=["hello", "world"])
    assert np.allclose(np.linalg.norm([d.embedding for d in emb.data], axis=1), 1, atol=1e-4)
