"""Tools: plain Python functions with typed parameters, described to models by a JSON schema.

``Tool.from_function`` (or the ``@tool`` decorator) reads the signature with pydantic: each parameter
becomes a field (``Annotated[int, Field(description=...)]`` works), the docstring's first paragraph
the description. ``Tool.call`` validates the arguments and runs the function (sync functions in a
thread); whatever goes wrong, bad arguments or an exception inside, comes back as a failed
``ToolResult`` whose observation the agent can read and react to. A tool call never raises.

Tools and agents are found by name in ``datapilot.core.Registry`` allow-lists (``TOOLS``, ``AGENTS``):
plugins, requests and plans name things only through them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from datapilot.core.errors import InvalidRequestError

OBSERVATION_CHARS = 2000  # a tool's observation is cut to this before it goes back to the model


@dataclass(slots=True)
class ToolOutput:
    """What a tool may return to control both sides: ``text`` for the model, ``data`` for the trace."""

    text: str
    data: Any = None


@dataclass(slots=True)
class ToolResult:
    tool: str
    ok: bool
    observation: str
    data: Any = None
    error: str | None = None
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "ok": self.ok,
            "observation": self.observation,
            "data": self.data,
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 2),
        }


def _describe(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _args_model(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    model: type[BaseModel] = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    return model


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return _text(value)


def _cut(text: str, limit: int = OBSERVATION_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... ({len(text) - limit} more characters)"


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    timeout_s: float | None = None

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> Tool:
        name = name or fn.__name__
        if not name.isidentifier():
            raise InvalidRequestError(f"tool name {name!r} must be an identifier")
        return cls(name, description or _describe(fn) or name, fn, _args_model(name, fn), timeout_s)

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as OpenAI's ``tools`` and the JSON action format show it."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def openai_spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters()},
        }

    def signature_line(self) -> str:
        """One line for a text prompt: ``name(arg: type, ...) - description``."""
        props = self.parameters().get("properties", {})
        required = set(self.parameters().get("required", []))
        args = ", ".join(f"{k}: {v.get('type', 'any')}{'' if k in required else '?'}" for k, v in props.items())
        return f"{self.name}({args}) - {self.description}"

    def coerce(self, args: Any) -> dict[str, Any]:
        """Arguments as a dict: a JSON string is parsed; a bare value fills the only required parameter."""
        if isinstance(args, str):
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError:
                parsed = args
            args = parsed
        if args is None:
            return {}
        if isinstance(args, dict):
            return args
        required = self.parameters().get("required", [])
        names = list(self.parameters().get("properties", {}))
        target = required[0] if len(required) == 1 else (names[0] if len(names) == 1 else None)
        if target is None:
            raise ValueError(f"arguments must be an object with keys {', '.join(names) or '(none)'}")
        return {target: args}

    async def call(self, args: Any) -> ToolResult:
        started = asyncio.get_running_loop().time()

        def done(ok: bool, observation: str, data: Any = None, error: str | None = None) -> ToolResult:
            elapsed = (asyncio.get_running_loop().time() - started) * 1000
            return ToolResult(self.name, ok, _cut(observation), data, error, elapsed)

        try:
            values = self.args_model.model_validate(self.coerce(args))
        except (ValidationError, ValueError) as exc:
            message = _validation_message(exc)
            return done(False, f"invalid arguments for {self.name}: {message}", error="invalid_arguments")
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        try:
            work: Awaitable[Any]
            if inspect.iscoroutinefunction(self.fn):
                work = self.fn(**kwargs)
            else:
                work = asyncio.to_thread(self.fn, **kwargs)
            value = await asyncio.wait_for(work, self.timeout_s) if self.timeout_s else await work
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return done(False, f"{self.name} timed out after {self.timeout_s} s", error="timeout")
        except Exception as exc:  # a tool's failure is an observation, never a crash of the run
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            return done(False, f"{self.name} failed: {type(exc).__name__}: {message}", error=type(exc).__name__)
        if isinstance(value, ToolOutput):
            return done(True, value.text, _jsonable(value.data))
        return done(True, _text(value), _jsonable(value))


def _validation_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ())) or "arguments"
            parts.append(f"{loc}: {e.get('msg')}")
        return "; ".join(parts)
    return str(exc)


F = TypeVar("F", bound=Callable[..., Any])


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout_s: float | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator: ``@tool`` or ``@tool(name=..., timeout_s=...)`` turns a function into a ``Tool``."""
    if fn is not None:
        return Tool.from_function(fn)

    def deco(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name, description, timeout_s)

    return deco
