"""The one writer of server-sent events: every stream DataPilot sends goes through ``sse_response``.

Each event is one ``data: {json}`` frame (compact JSON, UTF-8 as is), and every stream ends with
``data: [DONE]``, whatever happened. An error after the headers went out travels in the stream in the
shape every DataPilot API shares, ``{"type": "error", "error": {message, type, code, param}}`` (an
OpenAI client reads the ``error`` key too), then ``[DONE]`` follows. When the client disconnects the
producer is cancelled: under uvicorn (ASGI 2.3) Starlette cancels the response, and frames go out with
nothing in between; under ASGI 2.4 the producer runs in a task of its own, raced against the disconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from datapilot.core.errors import DataPilotError
from datapilot.core.events import ChatEvent, Event, exception_event
from datapilot.server.deps import wait_for_disconnect

log = logging.getLogger("datapilot.server")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE_FRAME = "data: [DONE]\n\n"
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: one `data: {json}` line per event (each a `ChatEvent`), "
        "then `data: [DONE]`. An error after the stream began arrives as an `error` event.",
        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ChatEvent"}}},
    }
}
"""The OpenAPI ``responses=`` of a streaming route: ``text/event-stream`` of ``ChatEvent``s (the schema
itself is added to ``components`` by ``install_event_schemas``)."""

_END = object()


def sse_frame(event: Any, extra: Mapping[str, Any] | None = None) -> str:
    """One ``data:`` frame. ``event``: an ``Event`` model (its ``wire()`` form), a dict, or any other
    JSON value (a flow's chunk); ``extra`` fields go in front of an event's own."""
    if isinstance(event, Event):
        event = event.wire()
    if extra and isinstance(event, Mapping):
        event = {**extra, **event}
    return f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'), default=str)}\n\n"


def error_frame(exc: BaseException, extra: Mapping[str, Any] | None = None) -> str:
    """The error event for ``exc``: its own body for a ``DataPilotError``, an internal error otherwise."""
    return sse_frame(exception_event(exc), extra)


async def _frames(events: AsyncIterable[Any], extra: Mapping[str, Any] | None, first: Any) -> AsyncGenerator[str]:
    """The frames of ``events`` (after ``first``), an error frame if the producer fails, then ``[DONE]``;
    the producer is closed however this ends (the client gone included)."""
    iterator = aiter(events)
    try:
        if first is not None:
            yield sse_frame(first, extra)
        async for event in iterator:
            yield sse_frame(event, extra)
    except DataPilotError as exc:  # the status line is gone: the error travels in the stream
        if exc.status_code >= 500:
            log.warning("stream failed: %s: %s", type(exc).__name__, exc.message)
        yield error_frame(exc, extra)
    except Exception as exc:
        log.exception("stream failed")
        yield error_frame(exc, extra)
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
    yield DONE_FRAME


def _watches_disconnect(request: Request) -> bool:
    """Whether Starlette cancels a streaming response itself when the client goes away: it does under
    ASGI spec 2.3 and earlier (uvicorn's), not under 2.4, where the writer watches for it."""
    spec = str((request.scope.get("asgi") or {}).get("spec_version", "2.0"))
    major, _, minor = spec.partition(".")
    return (int(major or 2), int(minor or 0)) < (2, 4)


async def sse_stream(
    request: Request,
    events: AsyncIterable[Any],
    *,
    extra: Mapping[str, Any] | None = None,
    first: Any = None,
) -> AsyncIterator[str]:
    """The frames of ``events`` (after ``first``, an event already taken from the producer), then
    ``[DONE]``; stops, cancelling the producer, when the client disconnects."""
    frames_of = _frames(events, extra, first)
    if _watches_disconnect(request):
        # The frames go out as they come, with no task or queue in between (the hot path of every
        # /v1 stream); a client that goes away cancels this generator, which closes the producer.
        async for chunk in frames_of:
            yield chunk
        return
    frames: asyncio.Queue[object] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for chunk in frames_of:
                await frames.put(chunk)
        finally:
            await frames_of.aclose()
        await frames.put(_END)

    producer = asyncio.create_task(produce(), name="sse-producer")
    gone = asyncio.create_task(wait_for_disconnect(request), name="sse-disconnect")
    try:
        while True:
            frame = asyncio.ensure_future(frames.get())
            await asyncio.wait({frame, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not frame.done():  # the client went away: nobody reads the rest, not even [DONE]
                frame.cancel()
                return
            item = frame.result()
            if item is _END:
                break
            assert isinstance(item, str)
            yield item
    finally:
        # Also when the server cancels this response: wait until the producer has really stopped.
        with anyio.CancelScope(shield=True):
            for task in (producer, gone):
                task.cancel()
            await asyncio.gather(producer, gone, return_exceptions=True)


def sse_response(
    request: Request,
    events: AsyncIterable[Any],
    *,
    extra: Mapping[str, Any] | None = None,
    first: Any = None,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """A ``text/event-stream`` response of ``events``: ``Event`` models, dicts or other JSON values.

    ``extra``: fields put in front of every event (``{"scene": "data"}``); ``first``: an event already
    taken from ``events`` (routes await it so that errors before the stream get their HTTP status);
    ``headers``: more response headers (``x-request-id``...)."""
    return StreamingResponse(
        sse_stream(request, events, extra=extra, first=first),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **(headers or {})},
    )


def event_schemas() -> dict[str, Any]:
    """The JSON schemas of ``ChatEvent`` and every event model in it, for OpenAPI ``components``."""
    schema = TypeAdapter(ChatEvent).json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "ChatEvent": schema}


def install_event_schemas(app: FastAPI) -> None:
    """Add the event schemas that ``SSE_RESPONSES`` points at to the app's ``/openapi.json``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, body in event_schemas().items():
                schemas.setdefault(name, body)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
