"""The runner: a DAG compiled once into a flat plan, executed per call with no graph analysis.

Per call it allocates one value slot per node and a copy of the in-degree counters. Ready nodes
run inline when nothing else could run meanwhile (a linear chain never creates a task); when several
async nodes are ready at once they become tasks and run concurrently. Sync functions always run
inline: they cannot overlap anyway. Nodes with an error policy or a timeout take the general path,
and so do nodes that run on Ray (their work is a Ray task; the policy and timeout apply around it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from datapilot.awel._errors import NodeError
from datapilot.awel._remote import remote_runner

if TYPE_CHECKING:
    from datapilot.awel._dag import DAG, BaseOperator

log = logging.getLogger("datapilot.awel")


class _Skipped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"

    def __bool__(self) -> bool:
        return False


SKIPPED: Any = _Skipped()
"""The value of a node that did not run: a branch not taken, or a failure under the skip policy."""


class Routed:
    """A branch's output: the value, and the names of the downstream nodes that receive it."""

    __slots__ = ("taken", "value")

    def __init__(self, value: Any, taken: frozenset[str]) -> None:
        self.value, self.taken = value, taken


class CallContext:
    """Per-call state handed to operators on the general path. Nothing in it outlives the call."""

    __slots__ = ("_state", "call_id", "dag", "data", "emit", "resources")

    def __init__(self, data: Any, dag: DAG, resources: Any, emit: Callable[[Any], None] | None = None) -> None:
        self.data, self.dag, self.resources = data, dag, resources
        self.call_id = ""
        self._state: dict[str, Any] | None = None
        # Where operators send the events a streaming caller sees (``DAG.run_events``); a plain
        # ``run`` drops them.
        self.emit: Callable[[Any], None] = emit or _drop

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space shared by the nodes of one call (e.g. a cache key from lookup to store)."""
        if self._state is None:
            self._state = {}
            self.call_id = uuid.uuid4().hex
        return self._state


def _drop(_event: Any) -> None:
    return None


class Step:
    __slots__ = ("async_", "join", "name", "op", "preds", "remote", "routed", "single", "source", "succs", "sync")

    def __init__(self, op: BaseOperator, preds: tuple[int, ...], succs: tuple[int, ...], routed: bool) -> None:
        self.op, self.name, self.preds, self.succs, self.routed = op, op.name, preds, succs, routed
        self.single = len(preds) == 1
        self.join = op.is_join
        # On Ray: the node's work as a Ray task, awaited on the general path (None: in this process).
        self.remote: Callable[[list[Any]], Awaitable[Any]] | None = remote_runner(op)
        simple = op.on_error.is_default and op.timeout is None and self.remote is None
        sync, async_ = op.fast_path() if simple else (None, None)
        self.sync: Callable[..., Any] | None = sync
        self.async_: Callable[..., Any] | None = async_
        self.source: Callable[[Any], Any] | None = op.source_path() if simple and op.is_source else None


class Plan:
    __slots__ = ("indegree", "size", "sources", "steps", "target")

    def __init__(self, ops: list[BaseOperator], target: BaseOperator) -> None:
        index = {id(op): i for i, op in enumerate(ops)}
        routers = {id(op) for op in ops if op.routes}
        self.steps = [
            Step(
                op,
                tuple(index[id(u)] for u in op.upstream),
                tuple(index[id(d)] for d in op.downstream if id(d) in index),
                any(id(u) in routers for u in op.upstream),
            )
            for op in ops
        ]
        self.size = len(ops)
        self.indegree = [len(s.preds) for s in self.steps]
        # popped from the end: reversed so sources start in declaration order
        self.sources = [i for i, s in reversed(list(enumerate(self.steps))) if not s.preds]
        self.target = index[id(target)]


async def run_node(step: Step, inputs: list[Any], ctx: CallContext) -> Any:
    """The general path: timeout and error policy around ``op.execute`` (or the node's Ray task)."""
    op = step.op
    policy = op.on_error
    remote = step.remote
    attempt = 0
    while True:
        try:
            if op.timeout is not None:
                async with asyncio.timeout(op.timeout):
                    return await (op.execute(inputs, ctx) if remote is None else remote(inputs))
            return await (op.execute(inputs, ctx) if remote is None else remote(inputs))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            action = policy.action
            if action == "retry" and attempt < policy.retries:
                delay = min(policy.backoff * 2**attempt, policy.max_backoff)
                attempt += 1
                log.info("node %s failed (%s); retry %d/%d in %.2fs", op.name, exc, attempt, policy.retries, delay)
                await asyncio.sleep(delay)
                continue
            if action == "fallback":
                log.warning("node %s failed (%s); using its fallback value", op.name, exc)
                return policy.fallback
            if action == "skip":
                log.warning("%s (node %s: %s)", policy.message or "node failed; skipping", op.name, exc)
                return SKIPPED
            raise NodeError(ctx.dag.name, op.name, op.kind, exc, timeout=op.timeout) from exc


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a failure already reported through another node must not warn at GC


async def execute(plan: Plan, data: Any, ctx: CallContext) -> Any:
    """Run one call; returns the target's raw value (``SKIPPED`` when it did not run)."""
    steps = plan.steps
    vals: list[Any] = [None] * plan.size
    remaining = plan.indegree.copy()
    ready = plan.sources.copy()
    tasks: dict[asyncio.Future[Any], int] = {}
    i = -1
    try:
        while True:
            while ready:
                i = ready.pop()
                st = steps[i]
                preds = st.preds
                if st.single:
                    v = vals[preds[0]]
                    if st.routed and type(v) is Routed:
                        v = v.value if st.name in v.taken else SKIPPED
                    if v is SKIPPED:
                        out = SKIPPED
                    elif st.sync is not None:
                        out = st.sync(v)
                    elif st.async_ is not None:
                        if ready or tasks:
                            tasks[asyncio.ensure_future(st.async_(v))] = i
                            continue
                        out = await st.async_(v)
                    else:
                        if ready or tasks:
                            tasks[asyncio.ensure_future(run_node(st, [v], ctx))] = i
                            continue
                        out = await run_node(st, [v], ctx)
                elif not preds:
                    if st.source is not None:
                        out = st.source(data)
                    elif ready or tasks:
                        tasks[asyncio.ensure_future(run_node(st, [], ctx))] = i
                        continue
                    else:
                        out = await run_node(st, [], ctx)
                else:
                    args = [vals[p] for p in preds]
                    if st.routed:
                        args = [(a.value if st.name in a.taken else SKIPPED) if type(a) is Routed else a for a in args]
                    skipped = sum(1 for a in args if a is SKIPPED)
                    if skipped and (not st.join or skipped == len(args)):
                        out = SKIPPED
                    else:
                        if skipped:
                            args = [None if a is SKIPPED else a for a in args]
                        if st.sync is not None:
                            out = st.sync(*args)
                        elif st.async_ is not None:
                            if ready or tasks:
                                tasks[asyncio.ensure_future(st.async_(*args))] = i
                                continue
                            out = await st.async_(*args)
                        elif ready or tasks:
                            tasks[asyncio.ensure_future(run_node(st, args, ctx))] = i
                            continue
                        else:
                            out = await run_node(st, args, ctx)
                vals[i] = out
                for s in st.succs:
                    r = remaining[s] - 1
                    remaining[s] = r
                    if r == 0:
                        ready.append(s)
            if not tasks:
                break
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                i = tasks.pop(t)
                vals[i] = t.result()
                for s in steps[i].succs:
                    r = remaining[s] - 1
                    remaining[s] = r
                    if r == 0:
                        ready.append(s)
    except NodeError:
        raise
    except Exception as exc:
        op = steps[i].op
        raise NodeError(ctx.dag.name, op.name, op.kind, exc) from exc
    finally:
        for t in tasks:
            t.cancel()
            t.add_done_callback(_retrieve)
    out = vals[plan.target]
    return out.value if type(out) is Routed else out
