"""Checking a JSON answer against a schema, and the smallest answer a schema admits.

The scripted test model honours ``response_format`` with these: its scripted reply when that is valid,
otherwise the smallest valid instance, so tests of the layers above see what a constrained model sends.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

_MISSING = object()


def is_valid(text: str, schema: dict[str, Any] | None) -> bool:
    """``text`` is one JSON value (an object when ``schema`` is None) valid under ``schema``."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if schema is None:
        return isinstance(value, dict)
    return Draft202012Validator(schema).is_valid(value)


def smallest_instance(schema: Any, root: dict[str, Any] | None = None) -> Any:
    """A small value valid under the subset of JSON Schema the grammar compiler supports."""
    root = root if root is not None else schema if isinstance(schema, dict) else {}
    if schema is True or schema == {} or not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return smallest_instance(_resolve(root, str(schema["$ref"])), root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return smallest_instance(schema[key][0], root)
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: smallest_instance(props.get(k, True), root) for k in schema.get("required", [])}
    if kind == "array":
        prefix = [smallest_instance(s, root) for s in schema.get("prefixItems", [])]
        need = max(0, int(schema.get("minItems", 0)) - len(prefix))
        return prefix + [smallest_instance(schema.get("items", True), root) for _ in range(need)]
    if kind == "string":
        formats = {"date": "2000-01-01", "time": "00:00:00", "date-time": "2000-01-01T00:00:00Z"}
        if schema.get("format") == "uuid":
            return "00000000-0000-0000-0000-000000000000"
        return formats.get(str(schema.get("format")), "x" * int(schema.get("minLength", 0)))
    if kind in ("integer", "number"):
        return max(0, int(schema.get("minimum", 0)))
    if kind == "boolean":
        return False
    return None


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node
