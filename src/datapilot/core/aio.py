"""Small asyncio helpers shared by every layer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (a background loop, a call nobody waits for) and wait until it has stopped."""
    if task is None or task.done():
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: a failure already reported elsewhere must not warn at GC
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
