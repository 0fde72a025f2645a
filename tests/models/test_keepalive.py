"""An upstream that closes a kept-alive connection just as it is reused (uvicorn closes idle ones after
5 s by default, our client keeps them 30 s): the request is sent again on a new connection, once, for
whole answers and streams alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from datapilot.core.errors import UpstreamError
from datapilot.core.types import Message, ModelRequest
from datapilot.models._openai_http import OpenAIHTTP

ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class OneRequestPerConnection:
    """Answers one request on each connection and says it keeps the connection alive, then closes it as
    soon as the next request starts to arrive on it."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # a connection opened and closed without a request
            writer.close()
            await writer.wait_closed()
            return
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        body = json.loads(await reader.readexactly(length))
        self.requests += 1
        if body.get("stream"):
            chunk = {"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]}
            payload = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            kind = b"text/event-stream"
        else:
            payload, kind = json.dumps(ANSWER).encode(), b"application/json"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nConnection: keep-alive\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        await writer.drain()
        # Kept open until the client reuses it, then closed unread: the idle timeout firing just as the
        # next request arrives. That request never reached the server.
        if await reader.read(1):
            self.dropped += 1
        writer.close()
        await writer.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture
async def upstream() -> AsyncIterator[OneRequestPerConnection]:
    up = OneRequestPerConnection()
    up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    async with up.server:
        yield up
        await asyncio.sleep(0.2)  # the last handler sees the client's close before the loop ends


def request() -> ModelRequest:
    return ModelRequest(model="m", messages=[Message("user", "hi")])


async def test_a_connection_closed_under_the_pool_is_replaced(upstream: OneRequestPerConnection) -> None:
    client = OpenAIHTTP(upstream.url)
    try:
        for _ in range(3):
            out = await client.generate(request(), "m")
            assert out.text == "hello"
        chunks = [c async for c in client.stream(request(), "m")]
        assert "".join(c.text for c in chunks) == "hello"
    finally:
        await client.aclose()
    assert upstream.requests == 4  # each request was answered once
    assert upstream.dropped == 3  # the last three first met the connection the previous one left


async def test_an_upstream_that_is_gone_is_still_an_error() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = OpenAIHTTP(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(UpstreamError, match="cannot reach upstream"):
            await client.generate(request(), "m")
    finally:
        await client.aclose()
