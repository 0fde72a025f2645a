"""JSON Schema to GBNF: the grammar of compact JSON values a schema accepts.

The answer is compact JSON (no whitespace between tokens: fewer tokens, and nothing a small model can
loop on), object properties in the schema's declared order, required ones always present and
optional ones optional. A schema keyword that cannot be enforced while generating is refused with
a message that names it and where it is, rather than silently producing answers that ignore it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for

from datapilot.core.errors import InvalidRequestError
from datapilot.models.structured._gbnf import parse_gbnf, reachable

# Keywords that only describe: accepted anywhere, never enforced.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$anchor",
        "contentMediaType",
        "contentEncoding",
        "discriminator",
    }
)
_SUPPORTED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "minLength",
        "maxLength",
        "format",
        "minimum",
        "exclusiveMinimum",
    }
)
_FORMATS = ("date", "time", "date-time", "uuid")
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
MAX_DIGITS = 16  # a runaway number is cut short rather than generated until max_tokens

_PRIMITIVES = {
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ( string ":" value ( "," string ":" value )* )? "}"',
    "array": '"[" ( value ( "," value )* )? "]"',
    "string": '"\\"" char* "\\""',
    "char": '[^"\\\\\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "integer": f'"-"? ( "0" | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}} )',
    "nonneg-integer": f'"0" | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}}',
    "pos-integer": f"[1-9] [0-9]{{0,{MAX_DIGITS - 1}}}",
    "fraction": f'( "." [0-9]{{1,{MAX_DIGITS}}} )? ( [eE] [-+]? [0-9]{{1,3}} )?',
    "number": "integer fraction",
    "nonneg-number": "nonneg-integer fraction",
    "boolean": '"true" | "false"',
    "null": '"null"',
    "date": '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )',
    "time": (
        '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
        '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )'
    ),
    "date-time": 'date "T" time',
    "uuid": '[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}',
}
_DEPENDS = {
    "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("string", "value"),
    "array": ("value",),
    "string": ("char",),
    "number": ("integer", "fraction"),
    "nonneg-number": ("nonneg-integer", "fraction"),
    "date-time": ("date", "time"),
}


def _refuse(param: str, keyword: str, pointer: str, why: str = "cannot be enforced while generating") -> None:
    raise InvalidRequestError(
        f"{param} uses {keyword!r} at {pointer or '/'}, which {why}; remove it, or send "
        'response_format {"type": "json_object"} and check the answer yourself',
        param=param,
    )


def _walk(schema: Any, pointer: str, param: str, root: dict[str, Any]) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} at {pointer or '/'} must be an object or a boolean", param=param)
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key not in _SUPPORTED:
            _refuse(param, key, pointer)
        here = f"{pointer}/{key}"
        if key == "format" and value not in _FORMATS:
            _refuse(param, f"format: {value}", pointer, f"is not one of the formats enforced ({', '.join(_FORMATS)})")
        if key in ("minimum", "exclusiveMinimum"):
            kind = schema.get("type")
            enforced = (
                (key == "minimum" and kind == "integer" and value in (0, 1))
                or (key == "minimum" and kind == "number" and value == 0)
                or (key == "exclusiveMinimum" and kind == "integer" and value == 0)
            )
            if not enforced:
                _refuse(
                    param,
                    f"{key}: {value}",
                    pointer,
                    "is enforced only as minimum 0 or 1 on an integer, exclusiveMinimum 0 on an integer, or "
                    "minimum 0 on a number",
                )
        if key == "$ref":
            _resolve(root, str(value), param, pointer)
        if key in ("properties", "$defs", "definitions"):
            for name, sub in value.items():
                _walk(sub, f"{here}/{name}", param, root)
        elif key in ("items", "additionalProperties"):
            _walk(value, here, param, root)
        elif key in ("prefixItems", "anyOf", "oneOf", "allOf"):
            for i, sub in enumerate(value):
                _walk(sub, f"{here}/{i}", param, root)
    if len(schema.get("allOf", ())) > 1 and not all(_is_plain_object(s) for s in schema["allOf"]):
        _refuse(param, "allOf", pointer, "is enforced only with one schema or plain object schemas to merge")


def _is_plain_object(schema: Any) -> bool:
    return isinstance(schema, dict) and set(schema) - _ANNOTATIONS <= {"type", "properties", "required"}


def _resolve(root: dict[str, Any], ref: str, param: str, pointer: str) -> Any:
    if not ref.startswith("#"):
        _refuse(param, f"$ref: {ref}", pointer, "points outside the schema")
    node: Any = root
    for part in ref[1:].lstrip("/").split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            raise InvalidRequestError(
                f"{param} has $ref {ref!r} at {pointer or '/'}, which points nowhere", param=param
            )
        node = node[key]
    return node


def check_json_schema(schema: object, *, param: str) -> None:
    """A 400 unless ``schema`` is valid JSON Schema that uses only keywords the compiler enforces."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} must be a JSON object (a JSON Schema)", param=param)
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/" + "/".join(str(p) for p in exc.path)
        raise InvalidRequestError(f"{param} is not valid JSON Schema at {where}: {exc.message}", param=param) from None
    _walk(schema, "", param, schema)


def _rule_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-").lower()
    return name or "r"


class GBNFBuilder:
    """Rules for several schemas in one grammar (a tool-call grammar has one schema per function)."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {}
        self._primitives: set[str] = set()
        self._refs: dict[tuple[int, str], str] = {}

    @staticmethod
    def literal(text: str) -> str:
        out = ['"']
        for ch in text:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\x{ord(ch):02X}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    def _unique(self, name: str) -> str:
        base = _rule_name(name)
        if base in ("root", *_PRIMITIVES):
            base = f"{base}-x"
        candidate, n = base, 1
        while candidate in self._rules:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def rule(self, name: str, body: str) -> str:
        key = self._unique(name)
        self._rules[key] = body
        return key

    def _primitive(self, name: str) -> str:
        if name not in self._primitives:
            self._primitives.add(name)
            for dep in _DEPENDS.get(name, ()):
                self._primitive(dep)
        return name

    def schema(self, schema: dict[str, Any], *, name: str, param: str) -> str:
        """The rule for values valid under ``schema`` (checked first)."""
        check_json_schema(schema, param=param)
        return self._value(schema, name, schema)

    # -- compiling -------------------------------------------------------------------------------

    def _value(self, schema: Any, name: str, root: dict[str, Any]) -> str:
        """A rule name (or a short expression) for ``schema``."""
        if schema is True or schema == {} or (isinstance(schema, dict) and not set(schema) - _ANNOTATIONS):
            return self._primitive("value")
        if schema is False:
            raise InvalidRequestError("a schema of false admits no value", param="response_format")
        if "$ref" in schema:
            ref = str(schema["$ref"])
            key = (id(root), ref)
            if key not in self._refs:
                rule = self._refs[key] = self._unique(ref.rsplit("/", 1)[-1] or name)
                self._rules[rule] = ""  # reserved: a recursive reference finds it
                self._rules[rule] = self._expr(_resolve(root, ref, "schema", ""), rule, root)
            return self._refs[key]
        expr = self._expr(schema, name, root)
        if re.fullmatch(r"[a-z0-9-]+", expr):
            return expr
        return self.rule(name, expr)

    def _json_literal(self, value: Any) -> str:
        return self.literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def _expr(self, schema: Any, name: str, root: dict[str, Any]) -> str:
        if not isinstance(schema, dict) or "$ref" in schema or not set(schema) - _ANNOTATIONS:
            return self._value(schema, name, root)
        if "const" in schema:
            return self._json_literal(schema["const"])
        if "enum" in schema:
            return "( " + " | ".join(self._json_literal(v) for v in schema["enum"]) + " )"
        for key in ("anyOf", "oneOf"):  # oneOf is compiled as anyOf: either branch validates most schemas
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                options = [
                    self._value({**rest, **s} if isinstance(s, dict) and rest else s, f"{name}-{i}", root)
                    for i, s in enumerate(schema[key])
                ]
                return "( " + " | ".join(options) + " )"
        if "allOf" in schema:
            parts = schema["allOf"]
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            if len(parts) == 1:
                only = parts[0]
                if isinstance(only, dict) and "$ref" not in only and set(rest) - _ANNOTATIONS:
                    return self._value({**rest, **only}, name, root)
                return self._value(only, name, root)
            properties: dict[str, Any] = {}
            required: list[str] = []
            for part in parts:
                properties.update(part.get("properties", {}))
                required += [r for r in part.get("required", []) if r not in required]
            return self._expr({"type": "object", "properties": properties, "required": required}, name, root)
        kind = schema.get("type")
        if isinstance(kind, list):
            options = [self._value({**schema, "type": t}, f"{name}-{t}", root) for t in kind]
            return "( " + " | ".join(options) + " )"
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            elif "format" in schema or "minLength" in schema or "maxLength" in schema:
                kind = "string"
            else:
                return self._primitive("value")
        if kind == "object":
            return self._object(schema, name, root)
        if kind == "array":
            return self._array(schema, name, root)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return self._number(schema, kind)
        if kind in ("boolean", "null"):
            return self._primitive(kind)
        raise InvalidRequestError(f"unknown type {kind!r}", param="response_format")

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        if fmt in _FORMATS:
            return f'"\\"" {self._primitive(fmt)} "\\""'
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        if lo == 0 and hi is None:
            return self._primitive("string")
        char = self._primitive("char")
        count = f"{{{lo},{int(hi)}}}" if hi is not None else f"{{{lo},}}"
        return f'"\\"" {char}{count} "\\""'

    def _number(self, schema: dict[str, Any], kind: str) -> str:
        low = schema.get("minimum")
        exclusive = schema.get("exclusiveMinimum")
        if kind == "integer":
            if low == 1 or exclusive == 0:
                return self._primitive("pos-integer")
            if low == 0:
                return self._primitive("nonneg-integer")
            return self._primitive("integer")
        return self._primitive("nonneg-number" if low == 0 else "number")

    def _object(self, schema: dict[str, Any], name: str, root: dict[str, Any]) -> str:
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        extra = schema.get("additionalProperties")
        string = self._primitive("string")
        extra_kv = None
        if isinstance(extra, dict) and (extra or not props):
            extra_kv = f"{string} {self.literal(':')} {self._value(extra, f'{name}-extra', root)}"
        elif not props and extra is not False:
            return self._primitive("object")
        pairs = [
            (
                f"{self.literal(json.dumps(key, ensure_ascii=False) + ':')} {self._value(sub, f'{name}-{key}', root)}",
                key in required,
            )
            for key, sub in props.items()
        ]
        # first: properties i.. when none was written yet; rest: when one was (each then needs a comma).
        # One rule per position keeps the grammar linear in the number of properties.
        comma = self.literal(",")
        rest = f"( {comma} {extra_kv} )*" if extra_kv else ""
        first = f"( {extra_kv} ( {comma} {extra_kv} )* )?" if extra_kv else ""
        for i in range(len(pairs) - 1, -1, -1):
            kv, req = pairs[i]
            if req:
                new_rest, new_first = f"{comma} {kv} {rest}", f"{kv} {rest}"
            else:
                new_rest = f"( {comma} {kv} )? {rest}"
                new_first = f"( {kv} {rest} | {first} )" if first else f"( {kv} {rest} )?"
            rest = self.rule(f"{name}-rest-{i}", new_rest.strip())
            first = self.rule(f"{name}-first-{i}", new_first.strip())
        return f'"{{" {first} "}}"' if first else '"{" "}"'

    def _array(self, schema: dict[str, Any], name: str, root: dict[str, Any]) -> str:
        comma = self.literal(",")
        prefix = [self._value(s, f"{name}-{i}", root) for i, s in enumerate(schema.get("prefixItems", []))]
        items = schema.get("items", True)
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        if prefix:
            head = f" {comma} ".join(prefix)
            if items is False or (hi is not None and int(hi) <= len(prefix)):
                return f'"[" {head} "]"'
            item = self._value(items, f"{name}-item", root)
            more = f"{{0,{int(hi) - len(prefix)}}}" if hi is not None else "*"
            return f'"[" {head} ( {comma} {item} ){more} "]"'
        if items is False or hi == 0:
            return '"[" "]"'
        item = self._value(items, f"{name}-item", root)
        if lo == 0:
            more = f"{{0,{int(hi) - 1}}}" if hi is not None else "*"
            return f'"[" ( {item} ( {comma} {item} ){more} )? "]"'
        more = f"{{{lo - 1},{int(hi) - 1}}}" if hi is not None else f"{{{lo - 1},}}"
        return f'"[" {item} ( {comma} {item} ){more} "]"'

    def build(self, root_body: str) -> str:
        """The grammar, checked, with only the rules ``root`` reaches."""
        rules = {"root": root_body, **self._rules}
        rules.update({name: _PRIMITIVES[name] for name in _PRIMITIVES if name in self._primitives})
        text = "".join(f"{name} ::= {body}\n" for name, body in rules.items())
        keep = reachable(parse_gbnf(text, param="grammar (built)"))
        return "".join(f"{name} ::= {body}\n" for name, body in rules.items() if name in keep)


def schema_to_gbnf(schema: dict[str, Any], *, param: str = "response_format.json_schema.schema") -> str:
    builder = GBNFBuilder()
    return builder.build(builder.schema(schema, name="value", param=param))


JSON_OBJECT_GBNF = schema_to_gbnf({"type": "object"})
