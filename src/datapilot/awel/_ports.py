"""Typed ports: what a node takes and gives, read from annotations, and whether an edge can match.

The check is deliberately optimistic: it reports an edge only when the types can never match
(``str`` into ``int``, a stream into a plain value). Anything unknown (no annotation, ``Any``,
a ``TypeVar``, a non-runtime protocol) is accepted.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

_NUMERIC = {int: (float, complex), float: (complex,), bool: (int, float, complex)}


def is_assignable(src: Any, dst: Any) -> bool:
    """Could a value of type ``src`` be given where ``dst`` is expected?"""
    if src is None or dst is None or src is Any or dst is Any or dst is object:
        return True
    if isinstance(src, typing.TypeVar) or isinstance(dst, typing.TypeVar):
        return True
    if src is type(None):
        src = types.NoneType
    d_origin, s_origin = typing.get_origin(dst), typing.get_origin(src)
    if d_origin in (typing.Union, types.UnionType):
        return any(is_assignable(src, d) for d in typing.get_args(dst))
    if s_origin in (typing.Union, types.UnionType):
        return any(is_assignable(s, dst) for s in typing.get_args(src))
    if d_origin is typing.Literal or s_origin is typing.Literal or d_origin is typing.Annotated:
        return True
    s_cls, d_cls = s_origin or src, d_origin or dst
    if not isinstance(s_cls, type) or not isinstance(d_cls, type):
        return True
    if d_cls in _NUMERIC.get(s_cls, ()):
        return True
    try:
        if not issubclass(s_cls, d_cls):
            return False
    except TypeError:  # protocols that are not runtime-checkable
        return True
    s_args, d_args = typing.get_args(src), typing.get_args(dst)
    if s_args and d_args and len(s_args) == len(d_args) and Ellipsis not in s_args + d_args:
        return all(is_assignable(a, b) for a, b in zip(s_args, d_args, strict=True))
    return True


def type_name(t: Any) -> str:
    """A short, stable spelling of a type for JSON and messages: ``list[str]``, ``AsyncIterator[str]``."""
    if t is None or t is Any:
        return "Any"
    if t is type(None):
        return "None"
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(t))
    if origin is not None:
        args = typing.get_args(t)
        base = getattr(origin, "__name__", None) or str(origin).removeprefix("typing.")
        if not args:
            return base
        return f"{base}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    if isinstance(t, type):
        return t.__name__
    return str(t).removeprefix("typing.")


def is_stream_type(t: Any) -> bool:
    origin = typing.get_origin(t) or t
    return isinstance(origin, type) and issubclass(origin, collections.abc.AsyncIterable)


def signature_types(fn: Callable[..., Any], skip_first: bool = False) -> tuple[list[Any], Any, int | None]:
    """(parameter types, return type, positional arity or None when it takes ``*args``) for ``fn``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: treat as unannotated
        hints = {}
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [], None, None
    if skip_first and params:
        params = params[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    required = [p for p in positional if p.default is p.empty]
    arity = None if variadic or len(required) != len(positional) else len(positional)
    ins = [hints.get(p.name) for p in positional]
    if variadic:
        star = next(p for p in params if p.kind is p.VAR_POSITIONAL)
        ins.append(hints.get(star.name))
    ret = hints.get("return")
    if inspect.iscoroutinefunction(fn) or ret is None:
        pass
    return ins, ret, arity
