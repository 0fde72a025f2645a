"""Run a blocking token generator in a worker thread and stream its chunks into asyncio.

Libraries such as llama.cpp generate token by token in blocking calls and are not thread-safe.
Each backend owns a one-thread executor: requests queue there in arrival order, and one request
never touches the model while another is using it. Closing the async iterator (the client went
away) sets the cancel event, which the generator checks between tokens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from datapilot.core.types import ModelChunk

Emit = Callable[[ModelChunk], None]
BlockingGenerate = Callable[[Emit, threading.Event], None]

_END = object()


class ThreadChannel:
    """Chunks from a worker thread to the event loop: ``put`` (any thread) and ``chunks()`` (the loop).

    An exception put is raised on the loop's side; ``_END`` or a chunk with a finish reason ends it.
    ``cancel`` is set when the reader goes away (or the loop shuts down), for the worker to stop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancel = threading.Event()

    def put(self, item: object) -> None:
        if self.loop.is_closed():
            self.cancel.set()
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # loop shut down while the thread was finishing
            self.cancel.set()

    def end(self) -> None:
        self.put(_END)

    async def chunks(self) -> AsyncIterator[ModelChunk]:
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, ModelChunk)
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancel.set()


async def stream_from_thread(executor: ThreadPoolExecutor, work: BlockingGenerate) -> AsyncIterator[ModelChunk]:
    channel = ThreadChannel()

    def run() -> None:
        if channel.cancel.is_set():  # cancelled while waiting for the executor: never start
            return
        try:
            work(channel.put, channel.cancel)
        except BaseException as exc:  # handed to the awaiting side, which re-raises it
            channel.put(exc)
        finally:
            channel.end()

    channel.loop.run_in_executor(executor, run)
    async for chunk in channel.chunks():
        yield chunk
