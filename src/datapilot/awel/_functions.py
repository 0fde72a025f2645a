"""Built-in functions in the function registry, usable by name from JSON and the DSL."""

from __future__ import annotations

import json
from typing import Any

from datapilot.awel._registry import register_function


@register_function("identity")
def identity(value: Any) -> Any:
    return value


@register_function("to_text")
def to_text(value: Any) -> str:
    return value if isinstance(value, str) else str(getattr(value, "text", value))


@register_function("upper")
def upper(value: str) -> str:
    return value.upper()


@register_function("lower")
def lower(value: str) -> str:
    return value.lower()


@register_function("strip")
def strip(value: str) -> str:
    return value.strip()


@register_function("to_json")
def to_json(value: Any) -> str:
    from datapilot.awel._library import to_jsonable

    return json.dumps(to_jsonable(value), ensure_ascii=False)


@register_function("concat")
def concat(*values: Any) -> str:
    return "".join("" if v is None else str(v) for v in values)


@register_function("add")
def add(a: Any, b: Any) -> Any:
    return a + b


@register_function("collect")
def collect(*values: Any) -> list[Any]:
    return list(values)
