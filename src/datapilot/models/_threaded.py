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


async def stream_from_thread(executor: ThreadPoolExecutor, work: BlockingGenerate) -> AsyncIterator[ModelChunk]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: object) -> None:
        if loop.is_closed():
            cancel.set()
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # loop shut down while the thread was finishing
            cancel.set()

    def run() -> None:
        if cancel.is_set():  # cancelled while waiting for the executor: never start
            return
        try:
            work(put, cancel)
        except BaseException as exc:  # handed to the awaiting side, which re-raises it
            put(exc)
        finally:
            put(_END)

    loop.run_in_executor(executor, run)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, ModelChunk)
            yield item
            if item.finish_reason is not None:
                return
    finally:
        cancel.set()
