"""The one intermediate form: a DAG of typed operator nodes, built with ``>>`` / ``<<``.

Every layer (operators, the fluent frame, the DSL, JSON) produces this graph. Structure is checked
as edges are made (port types, input counts) and when the ``with DAG(...)`` block closes (cycles,
dangling inputs, join arity, branch routes), each problem naming its nodes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from datapilot.awel._errors import DAGError, PortTypeError, SerializationError
from datapilot.awel._policy import FAIL, ErrorPolicy
from datapilot.awel._ports import is_assignable, is_stream_type, type_name
from datapilot.awel._registry import OPERATORS
from datapilot.awel._remote import Executor, check_executor, local_only_reason
from datapilot.awel._runner import SKIPPED, CallContext, Plan, execute
from datapilot.core.aio import stop_task

FORMAT = "datapilot.awel/v1"

_local = threading.local()


def _stack() -> list[DAG]:
    stack: list[DAG] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def current_dag() -> DAG | None:
    """The DAG of the innermost ``with DAG(...)`` block, if any."""
    stack = _stack()
    return stack[-1] if stack else None


@dataclass(frozen=True, slots=True)
class Requirement:
    """Something a node needs from the environment: a model (with a capability) or a named store."""

    node: str
    kind: str  # "model", "vector_store", "datasource", "cache", "history"
    name: str
    capability: str | None = None


class BaseOperator:
    """A node. Subclasses give ports (``input_types``/``output_type``), a runtime (``execute`` and,
    for speed, ``fast_path``) and their serialisable ``params``.

    Options every node takes: ``name``, ``on_error`` (an ``ErrorPolicy``), ``timeout`` (seconds), and
    ``executor``: ``"local"`` (in this process) or ``"ray"`` (its work runs as a Ray task, with Ray's
    task options from ``ray_options``, e.g. ``{"num_cpus": 1}``; given alone they mean ``"ray"``).
    Unset, the node follows its DAG's executor where it can run on Ray (see ``remote_work``)."""

    kind: ClassVar[str] = "operator"
    is_source: ClassVar[bool] = False
    is_join: ClassVar[bool] = False  # runs if any input arrived; skipped inputs are given as None
    routes: ClassVar[bool] = False  # output is a Routed (branches)
    max_inputs: ClassVar[int | None] = 1
    # Fixed ports and node name, declared on the class (methods below compute them when they vary).
    accepts: ClassVar[tuple[Any, ...]] = (None,)  # the type of each input (``None``: unknown)
    produces: ClassVar[Any] = None  # the output's type
    node_name: ClassVar[str | None] = None  # a node's name when the flow gives none [default: kind]

    def __init__(
        self,
        *,
        name: str | None = None,
        on_error: ErrorPolicy | None = None,
        timeout: float | None = None,
        executor: Executor | None = None,
        ray_options: Mapping[str, Any] | None = None,
        dag: DAG | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        self.name: str = name or ""
        self.explicit_name = name is not None
        self.on_error = on_error or FAIL
        self.timeout = timeout
        self.executor, self.ray_options = check_executor(executor, ray_options, name or type(self).__name__)
        self.upstream: list[BaseOperator] = []
        self.downstream: list[BaseOperator] = []
        self.dag: DAG | None = None
        owner = dag or current_dag()
        if owner is not None:
            owner.add(self)

    # ports ---------------------------------------------------------------------------------------
    def input_types(self) -> list[Any]:
        """Type of each input position (``None``: unknown). Variadic operators give one, repeated."""
        return list(self.accepts)

    def output_type(self) -> Any:
        return self.produces

    def expected_inputs(self) -> int | None:
        """Exact input count required, when it is fixed (a join over ``fn(a, b)`` needs 2)."""
        return None if self.max_inputs is None else (0 if self.is_source else 1)

    def input_type_at(self, position: int) -> Any:
        types = self.input_types()
        if not types:
            return None
        return types[position] if position < len(types) else (types[-1] if self.max_inputs is None else None)

    # runtime -------------------------------------------------------------------------------------
    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        """The general path: called with the node's inputs in edge order."""
        raise NotImplementedError

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        """(sync fn, async fn) taking the inputs positionally, used when no policy or timeout is set
        and the node needs no call context."""
        return None, None

    def source_path(self) -> Callable[[Any], Any] | None:
        """For sources: a sync fn from the call data to the node's value."""
        return None

    def remote_work(self) -> Callable[..., Any] | None:
        """The node's work as a plain function of its inputs (positionally), which can run in another
        process: with ``executor="ray"`` it runs as a Ray task, so it and the inputs must pickle.
        None (the default): the node needs this process (live clients, the call context, streams)."""
        return None

    def check_structure(self) -> list[str]:
        """Extra structural problems, checked when the DAG is validated."""
        return []

    def requirements(self) -> list[Requirement]:
        return []

    # naming and serialisation ---------------------------------------------------------------------
    def default_name(self) -> str:
        return self.node_name or self.kind

    def params(self) -> dict[str, Any]:
        """Constructor parameters as JSON values; ``from_params`` must rebuild an equal node."""
        return {}

    @classmethod
    def from_params(cls, params: dict[str, Any], **common: Any) -> BaseOperator:
        return cls(**params, **common)

    def describe(self) -> str:
        return f"{self.name!r} ({self.kind})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # composition ---------------------------------------------------------------------------------
    def __rshift__(self, other: Any) -> Any:
        for o in _many(other):
            _connect(self, o)
        return other

    def __rrshift__(self, other: Any) -> Any:  # [a, b] >> self
        for o in _many(other):
            _connect(o, self)
        return self

    def __lshift__(self, other: Any) -> Any:  # self << other: other feeds self
        for o in _many(other):
            _connect(o, self)
        return other

    def __rlshift__(self, other: Any) -> Any:  # [a, b] << self
        for o in _many(other):
            _connect(self, o)
        return self

    # calling -------------------------------------------------------------------------------------
    async def call(self, data: Any = None) -> Any:
        """Run the DAG up to this node (only its ancestors run) and return this node's value."""
        if self.dag is None:
            raise DAGError(f"node {self.describe()} is in no DAG")
        return await self.dag.run(data, output=self)


def _many(x: Any) -> Sequence[Any]:
    if isinstance(x, BaseOperator):
        return (x,)
    if isinstance(x, list | tuple):
        bad = [o for o in x if not isinstance(o, BaseOperator)]
        if not bad:
            return x
    raise TypeError(f">> and << connect operators or lists of operators, not {type(x).__name__}")


def _connect(up: BaseOperator, down: BaseOperator) -> None:
    dag = up.dag or down.dag
    if dag is None:
        raise DAGError(
            f"cannot connect {up.describe() if up.name else up!r} to {down!r}: neither is in a DAG; "
            "create operators inside `with DAG(...)` or pass dag="
        )
    dag.connect(up, down)


class DAG:
    """A named graph of operators. Use as a context manager to collect the operators created inside."""

    def __init__(
        self,
        name: str,
        description: str = "",
        resources: Any = None,
        *,
        executor: Executor | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``executor="ray"`` runs every node that can run on Ray (maps, joins) as a Ray task, with
        ``ray_options`` as the default task options; a node's own ``executor`` overrides it."""
        if not name or not isinstance(name, str):
            raise DAGError("a DAG needs a non-empty name")
        self.name = name
        self.description = description
        self.resources = resources
        self._executor, self._ray_options = check_executor(executor, ray_options, f"DAG {name!r}")
        self.nodes: dict[str, BaseOperator] = {}
        self.source_file: str | None = None
        self._version = 0
        self._validated = -1
        self._plans: dict[str | None, Plan] = {}

    # building ------------------------------------------------------------------------------------
    def __enter__(self) -> DAG:
        _stack().append(self)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        _stack().pop()
        if exc_type is None:
            self.validate()

    def add(self, op: BaseOperator) -> BaseOperator:
        if op.dag is self:
            return op
        if op.dag is not None:
            raise DAGError(f"node {op.describe()} already belongs to DAG {op.dag.name!r}")
        if op.explicit_name:
            if op.name in self.nodes:
                raise DAGError(f"DAG {self.name!r} already has a node named {op.name!r}")
        else:
            base = op.default_name() or op.kind
            name, n = base, 1
            while name in self.nodes:
                n += 1
                name = f"{base}_{n}"
            op.name = name
        op.dag = self
        self.nodes[op.name] = op
        self._changed()
        return op

    def connect(self, up: BaseOperator, down: BaseOperator) -> None:
        for op in (up, down):
            if op.dag is None:
                self.add(op)
            elif op.dag is not self:
                raise DAGError(f"cannot connect nodes of different DAGs ({op.describe()} is in {op.dag.name!r})")
        if up is down:
            raise DAGError(f"cycle: node {up.describe()} cannot feed itself", [f"cycle: {up.name} -> {up.name}"])
        if down.is_source:
            raise DAGError(f"node {down.describe()} is a source and takes no input; cannot connect {up.name!r} to it")
        if up in down.upstream:
            raise DAGError(f"edge {up.name} -> {down.name} already exists")
        if down.max_inputs is not None and len(down.upstream) >= down.max_inputs:
            have = ", ".join(u.name for u in down.upstream)
            raise DAGError(
                f"node {down.describe()} takes {down.max_inputs} input and already has one ({have}); "
                f"cannot also connect {up.name!r}: combine them with a JoinOperator first"
            )
        produced, wanted = up.output_type(), down.input_type_at(len(down.upstream))
        if not is_assignable(produced, wanted):
            position = f" input {len(down.upstream) + 1}" if down.max_inputs != 1 else ""
            raise PortTypeError(
                f"edge {up.name} -> {down.name}: {up.name!r} produces {type_name(produced)} but "
                f"{down.name!r}{position} takes {type_name(wanted)}"
            )
        down.upstream.append(up)
        up.downstream.append(down)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._plans.clear()

    @property
    def executor(self) -> Executor | None:
        """The flow's default executor for nodes that can run on Ray (None: in-process)."""
        return self._executor

    @property
    def ray_options(self) -> dict[str, Any] | None:
        """The flow's default Ray task options, under each node's own."""
        return self._ray_options

    def set_executor(self, executor: Executor | None, ray_options: Mapping[str, Any] | None = None) -> DAG:
        """Change the flow's default executor (and Ray options) after it was built."""
        self._executor, self._ray_options = check_executor(executor, ray_options, f"DAG {self.name!r}")
        self._changed()
        return self

    # structure -----------------------------------------------------------------------------------
    @property
    def sources(self) -> list[BaseOperator]:
        return [op for op in self.nodes.values() if op.is_source]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [op for op in self.nodes.values() if not op.downstream]

    @property
    def triggers(self) -> list[BaseOperator]:
        from datapilot.awel._operators import TriggerOperator

        return [op for op in self.nodes.values() if isinstance(op, TriggerOperator)]

    def node(self, name: str) -> BaseOperator:
        try:
            return self.nodes[name]
        except KeyError:
            raise DAGError(f"DAG {self.name!r} has no node {name!r}; nodes: {', '.join(self.nodes)}") from None

    def edges(self) -> list[tuple[str, str, int]]:
        """(source, target, input position) in a stable order."""
        return [(u.name, op.name, k) for op in self.nodes.values() for k, u in enumerate(op.upstream)]

    def validate(self) -> None:
        """Raise ``DAGError`` listing every structural problem; cheap to call again when unchanged."""
        if self._validated == self._version:
            return
        problems: list[str] = []
        if not self.nodes:
            problems.append(f"DAG {self.name!r} has no nodes")
        for op in self.nodes.values():
            n = len(op.upstream)
            if op.is_source and n:
                problems.append(f"source node {op.describe()} has inputs ({', '.join(u.name for u in op.upstream)})")
            if not op.is_source and n == 0:
                problems.append(
                    f"node {op.describe()} has no input: connect an upstream node, or start the DAG with an "
                    "InputOperator or a trigger"
                )
            want = op.expected_inputs()
            if not op.is_source and n and want is not None and n != want:
                got = ", ".join(u.name for u in op.upstream)
                problems.append(f"node {op.describe()} takes {want} input(s) but has {n} ({got})")
            if len(op.downstream) > 1 and is_stream_type(op.output_type()):
                problems.append(
                    f"node {op.describe()} produces a stream, which can be read once, but feeds "
                    f"{len(op.downstream)} nodes ({', '.join(d.name for d in op.downstream)}); collect it first"
                )
            if op.executor == "ray":
                reason = local_only_reason(op)
                if reason is not None:
                    problems.append(
                        f"node {op.describe()} cannot run on Ray: {reason}; leave its executor unset or 'local'"
                    )
            problems.extend(op.check_structure())
        cycle = self._find_cycle()
        if cycle:
            problems.append("cycle: " + " -> ".join(cycle))
        if problems:
            head = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
            raise DAGError(f"DAG {self.name!r} is invalid: {head}", problems)
        self._validated = self._version

    def _find_cycle(self) -> list[str] | None:
        state: dict[str, int] = {}  # 1 = on the path, 2 = done
        path: list[str] = []
        for start in self.nodes.values():
            if start.name in state:
                continue
            stack: list[tuple[BaseOperator, int]] = [(start, 0)]
            state[start.name] = 1
            path.append(start.name)
            while stack:
                op, k = stack[-1]
                if k < len(op.downstream):
                    stack[-1] = (op, k + 1)
                    nxt = op.downstream[k]
                    s = state.get(nxt.name)
                    if s == 1:
                        return [*path[path.index(nxt.name) :], nxt.name]
                    if s is None:
                        state[nxt.name] = 1
                        path.append(nxt.name)
                        stack.append((nxt, 0))
                else:
                    state[op.name] = 2
                    path.pop()
                    stack.pop()
        return None

    def _topological(self, ops: Iterable[BaseOperator]) -> list[BaseOperator]:
        chosen = {id(o) for o in ops}
        indeg = {id(o): sum(1 for u in o.upstream if id(u) in chosen) for o in self.nodes.values() if id(o) in chosen}
        queue = [o for o in self.nodes.values() if id(o) in chosen and indeg[id(o)] == 0]
        order: list[BaseOperator] = []
        while queue:
            op = queue.pop(0)
            order.append(op)
            for d in op.downstream:
                if id(d) in chosen:
                    indeg[id(d)] -= 1
                    if indeg[id(d)] == 0:
                        queue.append(d)
        return order

    def end_node(self) -> BaseOperator:
        leaves = self.leaves
        if len(leaves) != 1:
            names = ", ".join(op.name for op in leaves) or "none"
            raise DAGError(
                f"DAG {self.name!r} has {len(leaves)} end nodes ({names}); say which result you want with "
                "output= or node.call()"
            )
        return leaves[0]

    def plan(self, output: BaseOperator | str | None = None) -> Plan:
        """The compiled plan for computing ``output`` (default: the one end node); cached."""
        key = output if output is None or isinstance(output, str) else output.name
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        self.validate()
        target = self.end_node() if key is None else self.node(key)
        needed: dict[int, BaseOperator] = {}
        todo = [target]
        while todo:
            op = todo.pop()
            if id(op) not in needed:
                needed[id(op)] = op
                todo.extend(op.upstream)
        plan = self._plans[key] = Plan(self._topological(needed.values()), target)
        return plan

    # running -------------------------------------------------------------------------------------
    async def run(self, data: Any = None, *, output: BaseOperator | str | None = None, resources: Any = None) -> Any:
        """Run one call. ``data`` goes to every input node and trigger; returns the end node's value
        (``None`` when it was skipped). Calls share no state, so one DAG serves many at once."""
        plan = self._plans.get(output if output is None or isinstance(output, str) else output.name)
        if plan is None:
            plan = self.plan(output)
        out = await execute(plan, data, CallContext(data, self, resources or self.resources))
        return None if out is SKIPPED else out

    async def run_events(
        self, data: Any = None, *, output: BaseOperator | str | None = None, resources: Any = None
    ) -> AsyncIterator[Any]:
        """Run one call and iterate the events its operators emit (``ctx.emit``) as they happen.

        The call runs as a task beside the caller; events go through a queue, so a slow reader never
        blocks an operator. The end node's value is not yielded: an operator that wants it seen emits
        it. A failing node raises here after the events before the failure; closing the iterator
        (the client went away) cancels the call.
        """
        plan = self._plans.get(output if output is None or isinstance(output, str) else output.name)
        if plan is None:
            plan = self.plan(output)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        end = object()
        ctx = CallContext(data, self, resources or self.resources, queue.put_nowait)

        async def call() -> None:
            try:
                await execute(plan, data, ctx)
            finally:
                queue.put_nowait(end)

        task = asyncio.ensure_future(call())
        try:
            while True:
                event = await queue.get()
                if event is end:
                    break
                yield event
            task.result()  # raise the node's error, if any, after its events
        finally:
            if not task.done():
                await stop_task(task)

    async def run_raw(self, data: Any = None, *, output: BaseOperator | str | None = None) -> Any:
        """As ``run``, but a skipped end node gives ``SKIPPED`` rather than ``None``."""
        return await execute(self.plan(output), data, CallContext(data, self, self.resources))

    async def run_stream(self, data: Any = None, *, output: BaseOperator | str | None = None) -> AsyncIterator[Any]:
        """Run and iterate the result: a stream chunk by chunk, or a plain value as one chunk."""
        out = await self.run(data, output=output)
        if hasattr(out, "__aiter__"):
            async for chunk in out:
                yield chunk
        elif out is not None:
            yield out

    def run_sync(self, data: Any = None, *, output: BaseOperator | str | None = None) -> Any:
        """A thin sync wrapper for scripts and notebooks without a running loop."""
        return asyncio.run(self.run(data, output=output))

    def bind(self, resources: Any) -> DAG:
        """Attach the environment (clients, stores) that ready operators use at run time."""
        self.resources = resources
        return self

    def requirements(self) -> list[Requirement]:
        return [r for op in self.nodes.values() for r in op.requirements()]

    async def check(self, resources: Any = None) -> None:
        """Fail with an error naming it if a node needs a model or store the environment lacks."""
        from datapilot.awel._resources import FlowResources

        env = resources or self.resources
        if env is None:
            env = FlowResources()
        assert isinstance(env, FlowResources)
        await env.check(self)

    # the intermediate form ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self.validate()
        nodes = []
        for op in self.nodes.values():
            kind = OPERATORS.name_of(type(op))
            if kind is None:
                raise SerializationError(
                    f"node {op.describe()}: operator class {type(op).__name__} is not registered; "
                    "decorate it with @register_operator(name) to serialise this DAG"
                )
            try:
                params = op.params()
                json.dumps(params)
            except SerializationError as e:
                raise SerializationError(f"node {op.describe()}: {e.message}") from None
            except (TypeError, ValueError) as e:
                raise SerializationError(f"node {op.describe()}: parameters are not JSON values ({e})") from None
            node: dict[str, Any] = {"id": op.name, "type": kind, "params": params}
            if not op.on_error.is_default:
                node["on_error"] = op.on_error.to_dict()
            if op.timeout is not None:
                node["timeout"] = op.timeout
            if op.executor is not None:
                node["executor"] = op.executor
            if op.ray_options:
                node["ray_options"] = op.ray_options
            ins = op.input_types() if not op.is_source else []
            node["ports"] = {"inputs": [type_name(t) for t in ins], "output": type_name(op.output_type())}
            nodes.append(node)
        edges = [{"source": s, "target": t, "index": k} for s, t, k in self.edges()]
        out: dict[str, Any] = {"format": FORMAT, "name": self.name, "description": self.description}
        if self.executor is not None:
            out["executor"] = self.executor
        if self.ray_options:
            out["ray_options"] = self.ray_options
        return {**out, "nodes": nodes, "edges": edges}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], resources: Any = None) -> DAG:
        """Rebuild a DAG; operator types and functions resolve only through the registries."""
        if not isinstance(data, dict) or data.get("format", FORMAT) != FORMAT:
            raise SerializationError(f"not an AWEL graph (expected format {FORMAT!r})")
        try:
            dag = cls(
                str(data["name"]),
                str(data.get("description", "")),
                resources,
                executor=data.get("executor"),
                ray_options=data.get("ray_options"),
            )
            for node in data.get("nodes", []):
                op_cls = OPERATORS.get(str(node["type"]))
                policy = ErrorPolicy.from_dict(node["on_error"]) if node.get("on_error") else None
                placement = {k: node[k] for k in ("executor", "ray_options") if node.get(k) is not None}
                op = op_cls.from_params(
                    dict(node.get("params") or {}),
                    name=str(node["id"]),
                    on_error=policy,
                    timeout=node.get("timeout"),
                    **placement,
                )
                dag.add(op)
            for edge in sorted(data.get("edges", []), key=lambda e: (e["target"], e.get("index", 0))):
                dag.connect(dag.node(edge["source"]), dag.node(edge["target"]))
        except (KeyError, TypeError, ValueError) as e:
            raise SerializationError(f"malformed AWEL graph: {type(e).__name__}: {e}") from None
        dag.validate()
        return dag

    @classmethod
    def from_json(cls, text: str, resources: Any = None) -> DAG:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SerializationError(f"not valid JSON: {e}") from None
        return cls.from_dict(data, resources)

    def to_mermaid(self) -> str:
        ids = {name: f"n{i}" for i, name in enumerate(self.nodes)}
        lines = ["flowchart TD"]
        for name, op in self.nodes.items():
            label = f"{name}<br/><small>{op.kind}</small>".replace('"', "#quot;")
            shape = f'(["{label}"])' if op.is_source else f'{{"{label}"}}' if op.routes else f'["{label}"]'
            lines.append(f"    {ids[name]}{shape}")
        for s, t, _ in self.edges():
            lines.append(f"    {ids[s]} --> {ids[t]}")
        return "\n".join(lines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DAG) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<DAG {self.name} ({len(self.nodes)} nodes)>"
