"""Executors: where a node's work runs. ``local`` (the default) runs it in this process; ``ray`` runs it
as a Ray task (``datapilot.runtime.run_task``) and brings the result back into the flow.

A node can run on Ray when its work is a plain function of its inputs (``BaseOperator.remote_work``:
a map's or a join's function). Sources and triggers, branches, stream operators and operators that
use live objects of this process (model clients, stores, connections, the call context) cannot; asking
for ray on one explicitly is a ``DAGError``, and a flow-wide ``executor="ray"`` leaves them in-process.

Ray is imported only when a node runs on it; the process connects on that first run, to the address
given to ``set_ray_address`` (default: a local Ray).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from datapilot import runtime
from datapilot.awel._ports import is_stream_type

if TYPE_CHECKING:
    from datapilot.awel._dag import BaseOperator

Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")

# Ray's task options a node may set (JSON values, so a flow keeps them in JSON), with their value types.
_NUMBER = (numbers.Real,)
RAY_OPTIONS: dict[str, tuple[type, ...]] = {
    "num_cpus": _NUMBER,
    "num_gpus": _NUMBER,
    "memory": _NUMBER,
    "resources": (dict,),
    "accelerator_type": (str,),
    "max_retries": (int,),
    "retry_exceptions": (bool,),
    "runtime_env": (dict,),
    "scheduling_strategy": (str,),
    "label_selector": (dict,),
    "name": (str,),
}

_address: str | None = None
_namespace = "datapilot"


def set_ray_address(address: str | None, namespace: str = "datapilot") -> None:
    """The Ray cluster that nodes running on Ray use: ``None`` (a local Ray started on first use),
    ``"auto"``, ``"host:6379"`` or ``"ray://host:10001"``. Process-wide; takes effect when the
    process first connects (a server sets it from its settings at start)."""
    global _address, _namespace
    _address, _namespace = address, namespace


def ray_address() -> tuple[str | None, str]:
    """The (address, namespace) that ``set_ray_address`` gave."""
    return _address, _namespace


def check_executor(
    executor: str | None, ray_options: Mapping[str, Any] | None, where: str
) -> tuple[Executor | None, dict[str, Any] | None]:
    """Validate an executor and its Ray options; ``ray_options`` alone mean ``executor="ray"``."""
    chosen: Executor | None
    if executor is None:
        chosen = None
    elif executor == "local":
        chosen = "local"
    elif executor == "ray":
        chosen = "ray"
    else:
        raise ValueError(f"{where}: unknown executor {executor!r}; use 'local' or 'ray'")
    if ray_options is None or (isinstance(ray_options, Mapping) and not ray_options):
        return chosen, None
    if not isinstance(ray_options, Mapping):
        raise ValueError(f"{where}: ray_options must be a dict such as {{'num_cpus': 1}}")
    if executor == "local":
        raise ValueError(f"{where}: ray_options apply to executor='ray', not 'local'")
    for key, value in ray_options.items():
        types = RAY_OPTIONS.get(key)
        if types is None:
            raise ValueError(f"{where}: unknown Ray option {key!r}; use {', '.join(RAY_OPTIONS)}")
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            kinds = " or ".join("a number" if t is numbers.Real else t.__name__ for t in types)
            raise ValueError(f"{where}: Ray option {key} takes {kinds}, not {value!r}")
    try:
        json.dumps(dict(ray_options))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: ray_options must be JSON values, so the flow can be saved ({e})") from None
    return "ray", dict(ray_options)


def local_only_reason(op: BaseOperator) -> str | None:
    """Why ``op`` cannot run on Ray, or None when it can."""
    if op.is_source:
        return "sources and triggers read the call's data in this process"
    if op.routes:
        return "a branch routes the flow in this process"
    if any(is_stream_type(t) for t in [*op.input_types(), op.output_type()]):
        return "it passes a stream, which lives in this process"
    if op.remote_work() is None:
        return (
            "its work uses this process's live objects (model clients, stores, connections or the call "
            "context), not a plain function of its inputs"
        )
    return None


def effective_executor(op: BaseOperator) -> Executor:
    """The node's own executor, else its flow's for a node that can run on Ray, else local."""
    if op.executor is not None:
        return op.executor
    dag = op.dag
    if dag is not None and dag.executor == "ray" and local_only_reason(op) is None:
        return "ray"
    return "local"


def remote_runner(op: BaseOperator) -> Callable[[list[Any]], Awaitable[Any]] | None:
    """For a node that runs on Ray: a coroutine function from its inputs to its value, run as a Ray
    task. None for a node that runs in this process."""
    if effective_executor(op) != "ray":
        return None
    what = f"node {op.name!r} ({op.kind})"
    fn = op.remote_work()
    if fn is None:  # validate() reports this first; kept for nodes run without validation
        from datapilot.awel._errors import DAGError

        raise DAGError(f"{what} cannot run on Ray: {local_only_reason(op)}")
    dag_options = op.dag.ray_options if op.dag is not None else None
    options = {**(dag_options or {}), **(op.ray_options or {})}

    async def run(inputs: list[Any]) -> Any:
        if not runtime.connected():
            runtime.connect(_address, _namespace)
        return await runtime.run_task(fn, inputs, options=options, what=what)

    return run
