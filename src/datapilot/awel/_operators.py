"""The basic operators: input, map, join, merge, branch, and the stream operators."""

from __future__ import annotations

import collections.abc
import copy
import functools
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from datapilot.awel._dag import BaseOperator
from datapilot.awel._errors import DAGError, SerializationError
from datapilot.awel._ports import signature_types
from datapilot.awel._registry import FUNCTIONS, register_operator
from datapilot.awel._runner import CallContext, Routed

_UNSET: Any = object()


def fn_ref(fn: Callable[..., Any] | None) -> str | None:
    """A function's registry name, for JSON; unregistered functions cannot be serialised."""
    if fn is None:
        return None
    name = FUNCTIONS.name_of(fn)
    if name is None:
        label = getattr(fn, "__qualname__", repr(fn))
        raise SerializationError(
            f"function {label} is not in the function registry; register it with "
            "@register_function('name') to serialise this DAG"
        )
    return name


def fn_load(ref: object) -> Callable[..., Any] | None:
    if ref is None or callable(ref):
        return ref
    return FUNCTIONS.get(str(ref))


def _resolve(fn: object) -> Callable[..., Any]:
    resolved = fn_load(fn)
    if not callable(resolved):
        raise TypeError(f"expected a function, got {type(resolved).__name__}")
    return resolved


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _fn_label(fn: Callable[..., Any], fallback: str) -> str:
    name = FUNCTIONS.name_of(fn) or getattr(fn, "__name__", "")
    return name if name and name.isidentifier() and name != "<lambda>" else fallback


async def _maybe_await(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


class TriggerOperator(BaseOperator):
    """A source fed by the outside world (an HTTP request, an iterable); its value is the call data."""

    is_source = True
    max_inputs = 0

    def source_path(self) -> Callable[[Any], Any] | None:
        return _identity

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return ctx.data


def _identity(x: Any) -> Any:
    return x


@register_operator("input")
class InputOperator(BaseOperator):
    """A source: the call data, or a fixed ``value``, or what ``source()`` returns on each call."""

    is_source = True
    max_inputs = 0

    def __init__(self, value: Any = _UNSET, *, source: Callable[[], Any] | str | None = None, **kw: Any) -> None:
        self.value = value
        self.source = fn_load(source)
        super().__init__(**kw)

    node_name = "input"

    def output_type(self) -> Any:
        if self.source is not None:
            return signature_types(self.source)[1]
        return None if self.value is _UNSET else type(self.value)

    def source_path(self) -> Callable[[Any], Any] | None:
        if self.source is not None:
            return None
        if self.value is _UNSET:
            return _identity
        value = self.value
        return lambda _: value

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        if self.source is not None:
            return await _maybe_await(self.source())
        return ctx.data if self.value is _UNSET else self.value

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.value is not _UNSET:
            out["value"] = self.value
        if self.source is not None:
            out["source"] = fn_ref(self.source)
        return out


@register_operator("map")
class MapOperator(BaseOperator):
    """One input, one output: ``fn(x)``, sync or async. Or subclass and define ``map(self, x)``."""

    def __init__(self, fn: Callable[[Any], Any] | str | None = None, **kw: Any) -> None:
        if fn is None:
            if type(self).map is MapOperator.map:
                raise TypeError("MapOperator needs a function, or a subclass that defines map()")
            self.fn: Callable[..., Any] = self.map
            self._own_fn = False
        else:
            self.fn = _resolve(fn)
            self._own_fn = True
        super().__init__(**kw)

    def map(self, value: Any) -> Any:  # pragma: no cover - placeholder for subclasses
        raise NotImplementedError

    def default_name(self) -> str:
        return _fn_label(self.fn, "map") if self._own_fn else type(self).kind

    def input_types(self) -> list[Any]:
        ins, _, _ = signature_types(self.fn)
        return ins[:1] or [None]

    def output_type(self) -> Any:
        return signature_types(self.fn)[1]

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return (None, self.fn) if _is_async(self.fn) else (self.fn, None)

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        fn = self.fn
        if _is_async(fn):
            return await fn(inputs[0])
        if self.timeout is not None:  # a sync function can only be timed out from another thread
            import asyncio

            return await asyncio.to_thread(fn, inputs[0])
        return await _maybe_await(fn(inputs[0]))

    def remote_work(self) -> Callable[..., Any] | None:
        if self._own_fn:
            return self.fn
        # A subclass's map(): ship a copy of the node without its graph (the DAG, its neighbours).
        clone = copy.copy(self)
        clone.dag, clone.upstream, clone.downstream = None, [], []
        del clone.fn  # the bound method of the original node
        return functools.partial(type(self).map, clone)

    def params(self) -> dict[str, Any]:
        return {"fn": fn_ref(self.fn)} if self._own_fn else {}


@register_operator("join")
class JoinOperator(BaseOperator):
    """Combines its inputs with ``fn(a, b, ...)`` in edge order. Runs when at least one input arrived;
    an input skipped by a branch is given as ``None``. ``fn``'s arity must match the input count."""

    is_join = True
    max_inputs = None

    def __init__(self, fn: Callable[..., Any] | str, **kw: Any) -> None:
        self.fn = _resolve(fn)
        super().__init__(**kw)

    def default_name(self) -> str:
        return _fn_label(self.fn, "join")

    def input_types(self) -> list[Any]:
        return signature_types(self.fn)[0] or [None]

    def input_type_at(self, position: int) -> Any:
        ins, _, arity = signature_types(self.fn)
        if position < len(ins) and (arity is not None or position < len(ins) - 1):
            return ins[position]
        return ins[-1] if ins and arity is None else None

    def output_type(self) -> Any:
        return signature_types(self.fn)[1]

    def expected_inputs(self) -> int | None:
        return signature_types(self.fn)[2]

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return (None, self.fn) if _is_async(self.fn) else (self.fn, None)

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return await _maybe_await(self.fn(*inputs))

    def remote_work(self) -> Callable[..., Any] | None:
        return self.fn

    def params(self) -> dict[str, Any]:
        return {"fn": fn_ref(self.fn)}


@register_operator("merge")
class MergeOperator(BaseOperator):
    """Closes a branch: passes on the first input that was not skipped."""

    is_join = True
    max_inputs = None

    node_name = "merge"

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return _first_present, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return _first_present(*inputs)


def _first_present(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


@register_operator("branch")
class BranchOperator(BaseOperator):
    """Routes its input to one or more downstream nodes; the others are skipped, and skipping
    propagates until a join or merge.

    Either ``branches={downstream_name: predicate}`` (every true predicate is taken) or
    ``choose=fn`` returning a downstream name, a list of names, or None.
    """

    routes = True

    def __init__(
        self,
        branches: Mapping[str, Callable[[Any], bool] | str] | None = None,
        *,
        choose: Callable[[Any], Any] | str | None = None,
        **kw: Any,
    ) -> None:
        if (branches is None) == (choose is None):
            raise TypeError("BranchOperator takes either branches={name: predicate} or choose=fn")
        self.branches = {k: _resolve(v) for k, v in (branches or {}).items()}
        self.choose = fn_load(choose)
        super().__init__(**kw)

    node_name = "branch"

    def input_types(self) -> list[Any]:
        fn = self.choose or next(iter(self.branches.values()), None)
        return signature_types(fn)[0][:1] or [None] if fn else [None]

    def output_type(self) -> Any:
        return self.input_types()[0]

    def _route(self, value: Any) -> Routed:
        if self.choose is not None:
            picked = self.choose(value)
            if picked is None:
                taken: frozenset[str] = frozenset()
            elif isinstance(picked, str):
                taken = frozenset((picked,))
            else:
                taken = frozenset(picked)
            unknown = taken - {d.name for d in self.downstream}
            if unknown:
                raise ValueError(f"branch chose {sorted(unknown)}, which are not downstream of it")
        else:
            taken = frozenset(name for name, pred in self.branches.items() if pred(value))
        return Routed(value, taken)

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._route, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._route(inputs[0])

    def check_structure(self) -> list[str]:
        names = {d.name for d in self.downstream}
        return [
            f"branch {self.describe()} routes to {name!r}, which is not one of its downstream nodes "
            f"({', '.join(sorted(names)) or 'none'})"
            for name in self.branches
            if name not in names
        ]

    def params(self) -> dict[str, Any]:
        if self.choose is not None:
            return {"choose": fn_ref(self.choose)}
        return {"branches": {k: fn_ref(v) for k, v in self.branches.items()}}


# streams -----------------------------------------------------------------------------------------


def _stream_of(t: Any) -> Any:
    generic: Any = collections.abc.AsyncIterator
    return generic[t if t is not None else Any]


def _chunk_type(t: Any) -> Any:
    import typing

    args = typing.get_args(t)
    return args[0] if args else None


async def _aiter(values: Any) -> AsyncIterator[Any]:
    if isinstance(values, AsyncIterable):
        async for v in values:
            yield v
    else:
        for v in values:
            yield v


@register_operator("streamify")
class StreamifyOperator(BaseOperator):
    """Turns a value into a stream: ``fn(value)`` returning an (async) iterable, by default the value's
    own items (a string is one chunk)."""

    def __init__(self, fn: Callable[[Any], Iterable[Any] | AsyncIterable[Any]] | str | None = None, **kw: Any) -> None:
        self.fn = fn_load(fn)
        super().__init__(**kw)

    node_name = "streamify"

    def input_types(self) -> list[Any]:
        return signature_types(self.fn)[0][:1] or [None] if self.fn else [None]

    def output_type(self) -> Any:
        ret = signature_types(self.fn)[1] if self.fn else None
        return _stream_of(_chunk_type(ret))

    def _open(self, value: Any) -> AsyncIterator[Any]:
        if self.fn is not None:
            return _aiter(self.fn(value))
        return _aiter([value] if isinstance(value, str | bytes | dict) else value)

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._open, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._open(inputs[0])

    def params(self) -> dict[str, Any]:
        return {"fn": fn_ref(self.fn)} if self.fn else {}


@register_operator("transform_stream")
class TransformStreamOperator(BaseOperator):
    """Transforms a stream chunk by chunk with ``fn(chunk)`` (sync or async); lazy, so chunks flow
    through as they arrive. A chunk mapped to ``None`` is dropped."""

    def __init__(self, fn: Callable[[Any], Any] | str, **kw: Any) -> None:
        self.fn = _resolve(fn)
        super().__init__(**kw)

    def default_name(self) -> str:
        return _fn_label(self.fn, "transform_stream")

    def input_types(self) -> list[Any]:
        return [_stream_of((signature_types(self.fn)[0] or [None])[0])]

    def output_type(self) -> Any:
        return _stream_of(signature_types(self.fn)[1])

    async def _transform(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        fn, is_async = self.fn, _is_async(self.fn)
        async for chunk in stream:
            out = await fn(chunk) if is_async else fn(chunk)
            if out is not None:
                yield out

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._transform, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._transform(inputs[0])

    def params(self) -> dict[str, Any]:
        return {"fn": fn_ref(self.fn)}


@register_operator("collect_stream")
class CollectStreamOperator(BaseOperator):
    """Collects a stream: a list of chunks, or one string joined with ``separator`` when given."""

    def __init__(self, separator: str | None = None, **kw: Any) -> None:
        self.separator = separator
        super().__init__(**kw)

    node_name = "collect"
    accepts = (_stream_of(None),)

    def output_type(self) -> Any:
        return list[Any] if self.separator is None else str

    async def _collect(self, stream: AsyncIterator[Any]) -> Any:
        items = [c async for c in _aiter(stream)]
        return items if self.separator is None else self.separator.join(str(c) for c in items)

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return None, self._collect

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return await self._collect(inputs[0])

    def params(self) -> dict[str, Any]:
        return {} if self.separator is None else {"separator": self.separator}


@register_operator("reduce_stream")
class ReduceStreamOperator(BaseOperator):
    """Folds a stream (or a list) into one value with ``fn(acc, chunk)``, from ``initial`` when given."""

    def __init__(self, fn: Callable[[Any, Any], Any] | str, initial: Any = _UNSET, **kw: Any) -> None:
        self.fn = _resolve(fn)
        self.initial = initial
        super().__init__(**kw)

    def default_name(self) -> str:
        return _fn_label(self.fn, "reduce")

    def input_types(self) -> list[Any]:
        ins = signature_types(self.fn)[0]
        return [_stream_of(ins[1] if len(ins) > 1 else None) | Iterable[Any]]

    def output_type(self) -> Any:
        return signature_types(self.fn)[1]

    async def _reduce(self, stream: Any) -> Any:
        fn, is_async = self.fn, _is_async(self.fn)
        acc = self.initial
        async for chunk in _aiter(stream):
            if acc is _UNSET:
                acc = chunk
                continue
            acc = await fn(acc, chunk) if is_async else fn(acc, chunk)
        if acc is _UNSET:
            raise ValueError("reduce over an empty stream with no initial value")
        return acc

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return None, self._reduce

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return await self._reduce(inputs[0])

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fn": fn_ref(self.fn)}
        if self.initial is not _UNSET:
            out["initial"] = self.initial
        return out


def check_is_operator(x: object) -> BaseOperator:
    if not isinstance(x, BaseOperator):
        raise DAGError(f"expected an operator, got {type(x).__name__}")
    return x
