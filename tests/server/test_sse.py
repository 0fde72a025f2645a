"""The one SSE writer: frames, the shared error shape, [DONE] always, and cancellation on disconnect.

Driven over raw ASGI (no HTTP client buffers anything), so each test sees exactly the frames sent and
can make the client go away at a chosen point.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request

from datapilot.core.errors import NotFoundError
from datapilot.core.events import StepEvent, TextEvent, parse_event
from datapilot.server.sse import DONE_FRAME, sse_response


def _request(receive: Any) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "asgi": {"spec_version": "2.4"}}
    return Request(scope, receive)


class Client:
    """A client that reads the response and, if told, disconnects after ``leave_after`` body frames."""

    def __init__(self, leave_after: int | None = None, spec: str = "2.4") -> None:
        self.leave_after, self.spec = leave_after, spec
        self.gone = asyncio.Event()
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        frames = [m for m in self.messages if m["type"] == "http.response.body" and m.get("body")]
        if self.leave_after is not None and len(frames) >= self.leave_after:
            self.gone.set()

    async def run(self, events: Any, **kw: Any) -> None:
        response = sse_response(_request(self.receive), events, **kw)
        scope = {"type": "http", "asgi": {"spec_version": self.spec}}
        await asyncio.wait_for(response(scope, self.receive, self.send), timeout=10)

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body").decode()

    def events(self) -> list[Any]:
        frames = self.text.split("\n\n")
        assert frames[-1] == "" and all(f.startswith("data: ") for f in frames[:-1]), self.text
        return [f.removeprefix("data: ") for f in frames[:-1]]


async def _events(*items: Any, fail: BaseException | None = None) -> AsyncIterator[Any]:
    for item in items:
        yield item
    if fail is not None:
        raise fail


async def test_dicts_and_models_are_compact_json_frames_then_done() -> None:
    client = Client()
    await client.run(
        _events({"type": "step", "name": "schema", "tables": 3}, TextEvent(delta="Grüße, 你好"), "a flow's chunk"),
        extra={"scene": "data"},
        first=StepEvent(name="plan"),
        headers={"x-request-id": "r1"},
    )
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache" and client.headers["x-accel-buffering"] == "no"
    assert client.headers["x-request-id"] == "r1"
    frames = client.events()
    assert frames[-1] == "[DONE]" and client.text.endswith(DONE_FRAME)
    assert frames[:-1] == [
        '{"scene":"data","type":"step","name":"plan"}',
        '{"scene":"data","type":"step","name":"schema","tables":3}',
        '{"scene":"data","type":"text","delta":"Grüße, 你好"}',  # UTF-8 as is, not \\u escapes
        '"a flow\'s chunk"',  # not an object: sent as it is, without the extra fields
    ]
    assert isinstance(parse_event(json.loads(frames[1])), StepEvent)


async def test_an_error_mid_stream_is_one_error_event_then_done() -> None:
    client = Client()
    fail = NotFoundError("no space 'x'", param="space", code="space_not_found")
    await client.run(_events({"type": "citations", "citations": []}, fail=fail), extra={"scene": "knowledge"})
    frames = client.events()
    assert frames[-1] == "[DONE]"
    assert json.loads(frames[1]) == {
        "scene": "knowledge",
        "type": "error",
        "error": {
            "message": "no space 'x'",
            "type": "invalid_request_error",
            "code": "space_not_found",
            "param": "space",
        },
    }
    assert parse_event(json.loads(frames[1])).type == "error"


async def test_an_unexpected_exception_is_logged_and_sent_as_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client()
    with caplog.at_level(logging.ERROR, logger="datapilot.server"):
        await client.run(_events({"type": "delta", "text": "a"}, fail=ZeroDivisionError("secret detail")))
    frames = client.events()
    assert frames[-1] == "[DONE]" and len(frames) == 3
    error = json.loads(frames[1])
    assert error["type"] == "error" and error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "internal_error" and "secret" not in error["error"]["message"]
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


async def test_a_value_json_cannot_hold_goes_out_as_its_text() -> None:
    client = Client()
    await client.run(_events({"type": "x", "when": _Day()}))
    assert client.events() == ['{"type":"x","when":"2026-11-05"}', "[DONE]"]


class _Day:
    def __str__(self) -> str:
        return "2026-11-05"


async def test_an_empty_stream_still_ends_with_done() -> None:
    client = Client()
    await client.run(_events())
    assert client.text == DONE_FRAME


@pytest.mark.parametrize("spec", ["2.4", "2.3"])
async def test_a_client_that_goes_away_cancels_the_producer(spec: str) -> None:
    """2.4: the writer's own watch notices; 2.3: Starlette cancels the response, the writer then stops
    the producer before the response returns. Either way the producer's cleanup has run."""
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"type": "step", "name": "one"}
            started.set()
            await asyncio.sleep(3600)  # a model call that would never end
            yield {"type": "step", "name": "never"}
        finally:
            cleaned.set()

    client = Client(leave_after=1, spec=spec)
    await client.run(slow())
    assert started.is_set() and cleaned.is_set()
    assert "never" not in client.text and "[DONE]" not in client.text


async def test_a_producer_that_is_not_a_generator_is_closed_when_it_has_aclose() -> None:
    closed: list[bool] = []

    class Chunks:
        def __init__(self) -> None:
            self.items = [{"type": "delta", "text": "x"}]

        def __aiter__(self) -> Chunks:
            return self

        async def __anext__(self) -> dict[str, Any]:
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop()

        async def aclose(self) -> None:
            closed.append(True)

    client = Client()
    await client.run(Chunks())
    assert client.events() == ['{"type":"delta","text":"x"}', "[DONE]"] and closed == [True]
