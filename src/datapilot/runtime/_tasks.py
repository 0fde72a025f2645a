"""Running one plain function as a Ray task from asyncio, with Ray's failures turned into DataPilot's.

Ray is imported only when a task is run. The function and its arguments travel by cloudpickle: a
function defined at a module's top level goes by reference (the worker imports its module), a lambda or
closure by value. A failure inside the function comes back as the exception it raised (same type and
message); a failure of Ray itself (the worker or node died, the function or an argument cannot be
pickled) is a ``RemoteTaskError`` that says what to do. A caller that is cancelled (a timeout, a
cancelled flow) cancels the task in Ray.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from datapilot.core.errors import DataPilotError
from datapilot.runtime._ray import ray_module, unwrap_ray_error

log = logging.getLogger("datapilot.runtime")


class RemoteTaskError(DataPilotError):
    """A Ray task failed for a reason outside its own code: its worker or node died, its result was
    lost, or Ray cancelled it."""

    status_code = 503
    default_code = "ray_task_failed"


class NotShippableError(RemoteTaskError):
    """A task's function or one of its arguments cannot be pickled, so it cannot leave this process."""

    status_code = 500
    default_code = "ray_not_serialisable"


def _invoke(fn: Callable[..., Any], *args: Any) -> Any:
    """What runs in the Ray worker: ``fn(*args)``; an async function is run to completion there."""
    out = fn(*args)
    if inspect.isawaitable(out):
        return asyncio.run(_wait(out))
    return out


async def _wait(awaitable: Any) -> Any:
    return await awaitable


_remote: Any = None


def _remote_invoke(ray: Any) -> Any:
    global _remote
    if _remote is None:
        _remote = ray.remote(_invoke)
    return _remote


async def run_task(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    options: Mapping[str, Any] | None = None,
    what: str = "a Ray task",
) -> Any:
    """Run ``fn(*args)`` as a Ray task (with Ray's task ``options``: ``num_cpus``, ``max_retries``...)
    and return its result. This process must already be connected (``datapilot.runtime.connect``);
    ``what`` names the work in errors."""
    ray = ray_module()
    remote = _remote_invoke(ray)
    if options:
        remote = remote.options(**options)
    try:
        ref = remote.remote(fn, *args)
    except (TypeError, pickle.PicklingError, AttributeError, ray.exceptions.RaySystemError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotShippableError(
            f"{what} cannot be sent to Ray: {first}. Ray pickles the function and its input: define the "
            "function at a module's top level, pass plain values (no open files, locks, clients or "
            "connections), or run this node in-process (executor='local')"
        ) from exc
    try:
        return await ref
    except asyncio.CancelledError:
        _cancel(ray, ref, what)
        raise
    except ray.exceptions.RayError as exc:
        raise task_error(exc, what) from exc


def _cancel(ray: Any, ref: Any, what: str) -> None:
    try:
        ray.cancel(ref)
    except Exception as exc:  # the task may be gone already; nothing else to do
        log.debug("could not cancel %s in Ray: %s", what, exc)


def task_error(exc: BaseException, what: str) -> BaseException:
    """The error to raise for a Ray task that failed: the task's own exception when its code raised,
    else a ``RemoteTaskError`` saying what happened and what to do."""
    ray = ray_module()
    errors = ray.exceptions
    if isinstance(exc, errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, errors.RayError) and not isinstance(cause, errors.RayTaskError):
            return task_error(cause, what)  # Ray's own failure, reported through the task
        if isinstance(cause, BaseException):
            return cause  # the function raised it: the same type and message as in-process
        return RemoteTaskError(f"{what} failed in Ray and its error could not be sent back: {exc}")
    if isinstance(exc, errors.WorkerCrashedError | errors.NodeDiedError | errors.LocalRayletDiedError):
        return RemoteTaskError(
            f"the Ray worker running {what} died ({type(exc).__name__}); Ray retries a task whose worker "
            "dies max_retries times (3 unless ray_options say otherwise). Check the node's memory and "
            "the worker logs (`ray logs`), or give the node more memory in its ray_options"
        )
    if isinstance(exc, errors.OutOfMemoryError):
        return RemoteTaskError(
            f"Ray killed the worker running {what} because its node ran out of memory; give the node a "
            "memory reservation in its ray_options (e.g. memory = 2e9) or use a bigger node"
        )
    if isinstance(exc, errors.ObjectLostError | errors.OwnerDiedError):
        return RemoteTaskError(f"the result of {what} was lost in Ray ({type(exc).__name__}); run the flow again")
    if isinstance(exc, errors.TaskCancelledError):
        return RemoteTaskError(f"{what} was cancelled in Ray before it finished")
    unwrapped = unwrap_ray_error(exc, what)
    if isinstance(unwrapped, DataPilotError) and type(unwrapped) is DataPilotError:
        return RemoteTaskError(unwrapped.message)
    return unwrapped
