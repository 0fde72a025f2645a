"""The model manager as a library (``LLMClient``), with the scripted test model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from datapilot.core import LLMClient, Message, ModelConfig, ModelRequest, SamplingParams
from datapilot.core.errors import ConfigError, InvalidRequestError, ModelNotFoundError, ModelNotReadyError
from datapilot.models import ModelManager, ModelState, RequestRecord
from datapilot.models.backend import ModelBackend, backend_names, get_backend, register_backend


def manager(tmp_path: Path, records: list[RequestRecord] | None = None, **params: object) -> ModelManager:
    models = [
        ModelConfig(name="m", backend="scripted", params=params),
        ModelConfig(name="bad", backend="scripted", params={"fail_load": "no weights"}),
        ModelConfig(name="off", backend="scripted", enabled=False),
    ]
    return ModelManager(models, tmp_path, sink=records.append if records is not None else None)


def ask(text: str, **params: object) -> ModelRequest:
    return ModelRequest(model="m", messages=[Message("user", text)], params=SamplingParams(**params))


async def test_generate_stream_and_records(tmp_path: Path) -> None:
    records: list[RequestRecord] = []
    mgr = manager(tmp_path, records)
    assert isinstance(mgr, LLMClient)
    await mgr.start()
    assert set(mgr.workers) == {"m", "bad"}
    out = await mgr.generate(ask("hello there"))
    assert out.text == "You said: hello there" and out.finish_reason == "stop"
    assert out.usage.completion_tokens == 4 and out.timing is not None and out.timing.ttft_s is not None
    chunks = [c async for c in mgr.stream(ask("a b c", max_tokens=3))]
    assert "".join(c.text for c in chunks) == "You said: a"
    assert chunks[-1].finish_reason == "length" and chunks[-1].timing is not None
    assert [(r.kind, r.stream, r.status) for r in records] == [("chat", False, "ok"), ("chat", True, "ok")]
    await mgr.close()


async def test_cancelled_stream_stops_the_backend(tmp_path: Path) -> None:
    records: list[RequestRecord] = []
    mgr = manager(tmp_path, records, replies=[" ".join(["w"] * 500)], token_delay_s=0.01)
    await mgr.start()
    backend = mgr.workers["m"].backend
    stream = mgr.stream(ask("go"))
    async for _ in stream:
        if backend.tokens_generated >= 3:  # type: ignore[union-attr]
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert backend.tokens_generated < 10  # type: ignore[union-attr]
    assert records[-1].status == "cancelled"
    task = asyncio.ensure_future(mgr.generate(ask("go")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert records[-1].status == "cancelled" and records[-1].stream is False


async def test_errors(tmp_path: Path) -> None:
    mgr = manager(tmp_path)
    await mgr.start()
    assert mgr.workers["bad"].state is ModelState.FAILED
    with pytest.raises(ModelNotReadyError, match="no weights"):
        await mgr.generate(ModelRequest(model="bad", prompt="x"))
    with pytest.raises(ModelNotFoundError, match="available models: bad, m"):
        await mgr.generate(ModelRequest(model="off", prompt="x"))
    with pytest.raises(InvalidRequestError, match="maximum context length"):
        await mgr.generate(ask("x", max_tokens=10**6))
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        get_backend("nope")
    with pytest.raises(InvalidRequestError, match="declared twice"):
        ModelManager([ModelConfig(name="a", backend="scripted")] * 2, tmp_path)


async def test_failed_backend_is_reported_not_raised(tmp_path: Path) -> None:
    mgr = ModelManager([ModelConfig(name="x", backend="no_such_backend")], tmp_path)
    await mgr.start()
    assert mgr.workers["x"].state is ModelState.FAILED
    assert "unknown backend 'no_such_backend'" in (mgr.workers["x"].error or "")


async def test_register_backend_like_a_plugin(tmp_path: Path) -> None:
    from datapilot.models.backends.scripted import ScriptedBackend

    class Shouty(ScriptedBackend):
        async def generate(self, request: ModelRequest):  # type: ignore[no-untyped-def]
            out = await super().generate(request)
            out.text = out.text.upper()
            return out

    register_backend("shouty", Shouty)
    assert "shouty" in backend_names() and issubclass(get_backend("shouty"), ModelBackend)
    mgr = ModelManager([ModelConfig(name="m", backend="shouty")], tmp_path)
    await mgr.start()
    assert (await mgr.generate(ask("hi"))).text == "YOU SAID: HI"
