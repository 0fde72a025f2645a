"""JSON Schema to GBNF: the grammar of compact JSON values a schema accepts.

The answer is compact JSON (no whitespace between tokens: fewer tokens, and nothing a small model can
loop on), object properties in the schema's declared order, required ones always present and
optional ones optional. Every string the grammar admits validates against the schema; where that
cannot be promised (a keyword the grammar cannot express) the schema is refused with a message that
names the keyword and where it is, rather than silently producing answers that ignore it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from datapilot.core.errors import InvalidRequestError
from datapilot.models.structured._gbnf import MAX_REPEAT, GrammarError, gbnf_literal, parse_gbnf, reachable

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
        "discriminator",  # OpenAPI's hint next to oneOf (pydantic emits it); the branches still decide
        "example",  # OpenAPI's singular form, which clients copy into schemas
        "id",  # draft-04's $id
    }
)


def _is_annotation(key: str) -> bool:
    return key in _ANNOTATIONS or key.startswith("x-")  # x-...: OpenAPI vendor extensions


# Where subschemas are kept for $ref: no constraint on the value itself.
_DEFINITIONS = frozenset({"$defs", "definitions"})
_SUPPORTED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "additionalItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "minLength",
        "maxLength",
        "format",
        "minimum",
        "exclusiveMinimum",
        *_DEFINITIONS,
    }
)
_FORMATS = ("date", "time", "date-time", "uuid")
_FIXED_LENGTH = {"date": 10, "uuid": 36}
MAX_DIGITS = 16  # a runaway number is cut short rather than generated until max_tokens
# Bounds on lengths and item counts: llama.cpp writes x{0,n} out as n rules and refuses a grammar
# that needs 2000, so a larger bound is refused here (a smaller one keeps room for nesting).
MAX_COUNT = MAX_REPEAT // 2

_KEY_ESCAPES = '"\\bfnrt'  # the escapes json.dumps writes in a key (besides \uXXXX, for control chars)
_DAY = {
    "31": '( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )',
    "30": '( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )',
    "feb": '"02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] )',
}
_LEAP = '[0-9] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | ( "0" [48] | [2468] [048] | [13579] [26] ) "00"'
_PRIMITIVES = {
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ( string ":" value ( "," string ":" value )* )? "}"',
    "array": '"[" ( value ( "," value )* )? "]"',
    "string": '"\\"" char* "\\""',
    # One char is one code point: \u escapes of UTF-16 surrogates (two escapes, one character) are
    # left out, so minLength and maxLength count what the grammar counts.
    "char": (
        '[^"\\\\\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" ( [0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} '
        "| [dD] [0-7] [0-9a-fA-F]{2} ) )"
    ),
    # A key written only one way (no \u, no \/), so that "not one of these keys" is exact.
    "key-char": '[^"\\\\\\x00-\\x1F] | "\\\\" ["\\\\bfnrt]',
    "integer": f'"-"? ( "0" | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}} )',
    "nonneg-integer": f'"0" | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}}',
    "pos-integer": f"[1-9] [0-9]{{0,{MAX_DIGITS - 1}}}",
    "fraction": f'( "." [0-9]{{1,{MAX_DIGITS}}} )? ( [eE] [-+]? [0-9]{{1,3}} )?',
    "number": "integer fraction",
    "nonneg-number": "nonneg-integer fraction",
    "boolean": '"true" | "false"',
    "null": '"null"',
    # Real calendar dates only (RFC 3339 full-date, years 0001-9999): 29 February in leap years.
    "date": f'year "-" ( {_DAY["31"]} | {_DAY["30"]} | {_DAY["feb"]} ) | leap-year "-02-29"',
    "year": '[0-9] [0-9] [0-9] [1-9] | [0-9] [0-9] [1-9] "0" | [0-9] [1-9] "00" | [1-9] "000"',
    "leap-year": _LEAP,
    "time": (
        '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
        '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )'
    ),
    "date-time": 'date "T" time',
    "uuid": ('[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}'),
}
_DEPENDS = {
    "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("string", "value"),
    "array": ("value",),
    "string": ("char",),
    "number": ("integer", "fraction"),
    "nonneg-number": ("nonneg-integer", "fraction"),
    "date": ("year", "leap-year"),
    "date-time": ("date", "time"),
}


class _NoValue(Exception):
    """A (sub)schema no value can satisfy: an optional property or an anyOf branch is then left out."""

    def __init__(self, pointer: str, why: str) -> None:
        super().__init__(why)
        self.pointer, self.why = pointer, why


class _Refused(Exception):
    """A keyword the grammar cannot enforce, found while compiling (turned into a 400 with the param)."""

    def __init__(self, keyword: str, pointer: str, why: str) -> None:
        super().__init__(why)
        self.keyword, self.pointer, self.why = keyword, pointer, why


def _refusal(param: str, keyword: str, pointer: str, why: str) -> InvalidRequestError:
    hint = (
        'remove it, or send response_format {"type": "json_object"}'
        if param.startswith("response_format")
        else "remove it"
    )
    return InvalidRequestError(f"{param} uses {keyword!r} at {pointer or '/'}, which {why}; {hint}", param=param)


_CANNOT = "cannot be enforced while generating"
_NOTHING = "[^\\x00-\\U0010FFFF]"  # matches no character: the body of a rule no value can take


def _escape_pointer(key: object) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``schema`` that constrain the value (no annotations, no definitions)."""
    return {k: v for k, v in schema.items() if not _is_annotation(k) and k not in _DEFINITIONS}


def _types(schema: dict[str, Any]) -> tuple[str, ...] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    return (kind,) if isinstance(kind, str) else tuple(kind)


def _walk(schema: Any, pointer: str, param: str, root: dict[str, Any]) -> None:
    """Refuse keywords the compiler does not enforce, naming each with its JSON pointer."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} at {pointer or '/'} must be an object or a boolean", param=param)
    for key, value in schema.items():
        if _is_annotation(key):
            continue
        if key not in _SUPPORTED:
            raise _refusal(param, key, pointer, _CANNOT)
        here = f"{pointer}/{_escape_pointer(key)}"
        if key == "format" and value not in _FORMATS:
            types = _types(schema)
            if types is None or "string" in types:  # format says nothing about other types
                raise _refusal(
                    param, f"format: {value}", pointer, f"is not one of the formats enforced ({', '.join(_FORMATS)})"
                )
        if key == "$ref":
            _resolve(root, str(value), param, pointer)
        if key in ("properties", *_DEFINITIONS):
            for name, sub in value.items():
                _walk(sub, f"{here}/{_escape_pointer(name)}", param, root)
        elif key in ("items", "prefixItems") and isinstance(value, list):
            for i, sub in enumerate(value):
                _walk(sub, f"{here}/{i}", param, root)
        elif key in ("items", "additionalItems", "additionalProperties"):
            _walk(value, here, param, root)
        elif key in ("anyOf", "oneOf", "allOf"):
            for i, sub in enumerate(value):
                _walk(sub, f"{here}/{i}", param, root)


def _resolve(root: dict[str, Any], ref: str, param: str, pointer: str) -> Any:
    if not ref.startswith("#"):
        raise _refusal(param, f"$ref: {ref}", pointer, "points outside the schema")
    node: Any = root
    for part in unquote(ref[1:]).lstrip("/").split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise InvalidRequestError(
                f"{param} has $ref {ref!r} at {pointer or '/'}, which points nowhere", param=param
            )
    return node


def _checked(schema: object, param: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} must be a JSON object (a JSON Schema)", param=param)
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/" + "/".join(_escape_pointer(p) for p in exc.path)
        raise InvalidRequestError(f"{param} is not valid JSON Schema at {where}: {exc.message}", param=param) from None
    _walk(schema, "", param, schema)
    return schema


def check_json_schema(schema: object, *, param: str) -> None:
    """A 400 unless ``schema`` is valid JSON Schema that the compiler can enforce in full.

    The schema is compiled (and the result thrown away) so that what only compiling finds, such as
    a bound the grammar cannot express or a schema no value satisfies, is refused here too.
    """
    builder = GBNFBuilder()
    builder.build(builder._compile(_checked(schema, param), name="value", param=param))


def _seq(*parts: str) -> str:
    """A GBNF sequence of the non-empty ``parts``."""
    return " ".join(p for p in parts if p)


def _rule_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-").lower()
    return name or "r"


def _class_char(c: str) -> str:
    """``c`` inside a GBNF character class (llama.cpp escapes only these, and ``^`` never)."""
    if c in "\\]-[":
        return "\\" + c
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\x{ord(c):02X}"
    return c


def _key_units(key: str) -> list[str] | None:
    """The JSON text of ``key`` split into what ``key-char`` matches one at a time; None when the
    key needs a \\u escape, which ``key-char`` never writes (so no generated key can equal it)."""
    text, units, i = json.dumps(key, ensure_ascii=False)[1:-1], [], 0
    while i < len(text):
        if text[i] == "\\":
            if text[i + 1] == "u":
                return None
            units.append(text[i : i + 2])
            i += 2
        else:
            units.append(text[i])
            i += 1
    return units


class _Trie:
    def __init__(self) -> None:
        self.end = False
        self.kids: dict[str, _Trie] = {}


class GBNFBuilder:
    """Rules for several schemas in one grammar (a tool-call grammar has one schema per function)."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {}
        self._primitives: set[str] = set()
        self._refs: dict[tuple[int, str], str] = {}
        self._roots: list[dict[str, Any]] = []  # kept alive: their ids key the $ref rules
        self._validators: dict[int, Validator] = {}
        self._root: dict[str, Any] = {}
        self._param = "schema"
        self._base = "value"
        self._merging: list[str] = []

    literal = staticmethod(gbnf_literal)

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
        """Add a rule with a name made unique (and valid GBNF) from ``name``; returns that name."""
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
        """The rule for values valid under ``schema`` (checked first: a 400 naming ``param``)."""
        return self._compile(_checked(schema, param), name=name, param=param)

    def _compile(self, schema: dict[str, Any], *, name: str, param: str) -> str:
        if not any(r is schema for r in self._roots):
            self._roots.append(schema)
        self._root, self._param, self._base = schema, param, name
        try:
            return self._value(schema, name, "")
        except _NoValue as exc:
            raise InvalidRequestError(
                f"{param} admits no value at {exc.pointer or '/'} ({exc.why}), so nothing can be generated",
                param=param,
            ) from None
        except _Refused as exc:
            raise _refusal(param, exc.keyword, exc.pointer, exc.why) from None

    def build(self, root_body: str) -> str:
        """The grammar, checked, with ``root`` first and only the rules it reaches."""
        rules = {"root": root_body, **self._rules}
        rules.update({name: _PRIMITIVES[name] for name in _PRIMITIVES if name in self._primitives})
        text = "".join(f"{name} ::= {body}\n" for name, body in rules.items())
        try:
            keep = reachable(parse_gbnf(text, param=self._param))
        except GrammarError as exc:  # e.g. a schema whose anyOf starts with a reference to itself
            raise InvalidRequestError(
                f"{self._param} cannot be turned into a grammar: {exc.message}", param=self._param
            ) from None
        return "".join(f"{name} ::= {body}\n" for name, body in rules.items() if name in keep)

    # -- compiling -------------------------------------------------------------------------------

    def _value(self, schema: Any, name: str, pointer: str) -> str:
        """A rule name for ``schema`` (a new rule unless the expression already is one)."""
        if isinstance(schema, dict) and set(_constraints(schema)) == {"$ref"}:
            return self._ref(str(schema["$ref"]), name, pointer)
        expr = self._expr(schema, name, pointer)
        if re.fullmatch(r"[a-z0-9-]+", expr):
            return expr
        return self.rule(name, expr)

    def _ref(self, ref: str, name: str, pointer: str) -> str:
        key = (id(self._root), ref)
        if key not in self._refs:
            target = self._follow(ref, pointer)
            # Named after the schema's own name too, so two tools' "$defs/Item" stay apart.
            rule = self._refs[key] = self._unique(f"{self._base}-{ref.rsplit('/', 1)[-1] or name}")
            self._rules[rule] = ""  # reserved: a recursive reference finds it
            try:
                self._rules[rule] = self._expr(target, rule, unquote(ref[1:]))
            except _NoValue:
                # Rules made meanwhile may name this one; they are unreachable now, but must parse.
                self._rules[rule] = _NOTHING
                del self._refs[key]
                raise
        return self._refs[key]

    def _json_literal(self, value: Any, pointer: str) -> str:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:
            raise _Refused("enum", pointer, f"lists {value!r}, which is not JSON") from None
        return self.literal(text)

    def _validator(self) -> Validator:
        key = id(self._root)
        if key not in self._validators:
            cls = validator_for(self._root, default=Draft202012Validator)
            self._validators[key] = cls(self._root, format_checker=cls.FORMAT_CHECKER)
        return self._validators[key]

    def _expr(self, schema: Any, name: str, pointer: str) -> str:
        if schema is False:
            raise _NoValue(pointer, "the schema is false")
        if schema is True or not _constraints(schema):
            return self._primitive("value")
        here = _constraints(schema)
        if "enum" in here or "const" in here:
            return self._enum(here, pointer)
        if "$ref" in here:
            ref = str(here["$ref"])
            rest = {k: v for k, v in here.items() if k != "$ref"}
            if not rest:
                return self._ref(ref, name, pointer)
            # Siblings of $ref constrain the value too (2020-12; earlier drafts ignore them, so
            # honouring them is merely stricter): the target is merged with them.
            with self._expanding(ref, pointer):
                merged = self._conjoin(rest, self._follow(ref, pointer), pointer)
                return self._expr(merged, name, pointer)
        if "allOf" in here:
            merged = {k: v for k, v in here.items() if k != "allOf"}
            refs = [str(p["$ref"]) for p in here["allOf"] if isinstance(p, dict) and "$ref" in p]
            with self._expanding(refs, pointer):
                for i, part in enumerate(here["allOf"]):
                    merged = self._conjoin(merged, self._inline(part, f"{pointer}/allOf/{i}"), f"{pointer}/allOf")
                return self._expr(merged, name, pointer)
        for key in ("anyOf", "oneOf"):
            # oneOf is compiled as anyOf: "exactly one" cannot be checked while generating, and for
            # the usual oneOf (branches of different types or tags) any branch is exactly one.
            if key in here:
                return self._any_of(here, key, name, pointer)
        types = _types(here)
        if types is not None and len(types) > 1:
            return self._alternatives(({**here, "type": t}, f"{name}-{t}", pointer) for t in types)
        kind = types[0] if types else self._implied_type(here)
        if kind == "object":
            return self._object(here, name, pointer)
        if kind == "array":
            return self._array(here, name, pointer)
        if kind == "string":
            return self._string(here, pointer)
        if kind in ("integer", "number"):
            return self._number(here, kind, pointer)
        if kind in ("boolean", "null"):
            return self._primitive(kind)
        return self._primitive("value")

    @staticmethod
    def _implied_type(schema: dict[str, Any]) -> str | None:
        """Without ``type``, keywords of one type make its values the ones generated (a subset of
        what the schema admits, so still valid); with none of them, any value."""
        if {"properties", "additionalProperties", "required"} & schema.keys():
            return "object"
        if {"items", "prefixItems", "additionalItems", "minItems", "maxItems"} & schema.keys():
            return "array"
        if {"format", "minLength", "maxLength"} & schema.keys():
            return "string"
        if {"minimum", "exclusiveMinimum"} & schema.keys():
            return "number"
        return None

    def _alternatives(self, branches: Iterable[tuple[Any, str, str]]) -> str:
        options: list[str] = []
        last: _NoValue | None = None
        for schema, name, pointer in branches:
            try:
                options.append(self._value(schema, name, pointer))
            except _NoValue as exc:
                last = exc
        if not options:
            assert last is not None
            raise last
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def _any_of(self, schema: dict[str, Any], key: str, name: str, pointer: str) -> str:
        rest = {k: v for k, v in schema.items() if k != key}
        if not rest:
            return self._alternatives((sub, f"{name}-{i}", f"{pointer}/{key}/{i}") for i, sub in enumerate(schema[key]))
        refs = [str(s["$ref"]) for s in schema[key] if isinstance(s, dict) and "$ref" in s]
        with self._expanding(refs, pointer):
            branches = []
            for i, sub in enumerate(schema[key]):
                where = f"{pointer}/{key}/{i}"
                try:
                    branches.append((self._conjoin(rest, self._inline(sub, where), where), f"{name}-{i}", where))
                except _NoValue:
                    continue
            if not branches:
                raise _NoValue(pointer, f"no branch of {key} can be satisfied")
            return self._alternatives(branches)

    @contextmanager
    def _expanding(self, refs: str | list[str], pointer: str) -> Iterator[None]:
        """Mark references being merged into a schema (not compiled as rules of their own): one
        met again while it is being merged would be merged forever, and is refused."""
        refs = [refs] if isinstance(refs, str) else refs
        for ref in refs:
            if ref in self._merging:
                raise _Refused("$ref", pointer, f"merges {ref} into itself; move its sibling keywords into it")
        self._merging.extend(refs)
        try:
            yield
        finally:
            del self._merging[len(self._merging) - len(refs) :]

    def _follow(self, ref: str, pointer: str) -> Any:
        seen = {ref}
        target = _resolve(self._root, ref, self._param, pointer)
        while isinstance(target, dict) and set(_constraints(target)) == {"$ref"}:
            ref = str(target["$ref"])
            if ref in seen:
                raise _Refused("$ref", pointer, "refers only to itself")
            seen.add(ref)
            target = _resolve(self._root, ref, self._param, pointer)
        return target

    def _inline(self, schema: Any, pointer: str) -> Any:
        """A schema to merge with others: a bare $ref is replaced by what it points at (one level;
        references inside stay references, so recursive schemas still end)."""
        if isinstance(schema, dict) and set(_constraints(schema)) == {"$ref"}:
            return self._follow(str(schema["$ref"]), pointer)
        return schema

    def _conjoin(self, a: Any, b: Any, pointer: str) -> Any:
        """One schema admitting exactly what both admit, for the keyword combinations where merging
        the two objects keeps that meaning; anything else is refused rather than approximated."""
        if a is False or b is False:
            raise _NoValue(pointer, "the schema is false")
        if a is True:
            return b
        if b is True:
            return a
        out = _constraints(a)
        other = _constraints(b)
        for group in (("properties", "additionalProperties"), ("prefixItems", "items", "additionalItems")):
            # additionalProperties (and additionalItems) depend on their neighbours in the same schema:
            # the two schemas may merge only if they agree on all of the group, or one has none of it.
            mine = {k: out[k] for k in group if k in out}
            theirs = {k: other[k] for k in group if k in other}
            only_properties = mine.keys() == theirs.keys() == {"properties"}  # merged one by one below
            if mine and theirs and mine != theirs and not only_properties:
                keyword = "additionalProperties" if group[0] == "properties" else "items"
                raise _Refused(keyword, pointer, "cannot be combined with the schema it is merged with")
        for key, value in other.items():
            if key not in out or out[key] == value:
                out[key] = value
            elif key == "properties":
                for prop, sub in value.items():
                    if prop in out[key] and out[key][prop] != sub:
                        out[key] = {**out[key], prop: self._conjoin(out[key][prop], sub, f"{pointer}/properties")}
                    else:
                        out[key] = {**out[key], prop: sub}
            elif key == "required":
                out[key] = [*out[key], *(r for r in value if r not in out[key])]
            elif key in ("minLength", "minItems"):
                out[key] = max(out[key], value)
            elif key in ("maxLength", "maxItems"):
                out[key] = min(out[key], value)
            elif key == "type":
                kinds_a, kinds_b = _types(out) or (), _types(other) or ()
                both = [t for t in kinds_a if t in kinds_b or (t == "integer" and "number" in kinds_b)]
                both += [t for t in kinds_b if t == "integer" and "number" in kinds_a and t not in both]
                if not both:
                    raise _NoValue(pointer, f"no value is both of type {kinds_a} and {kinds_b}")
                out[key] = both
            else:
                raise _Refused(key, pointer, "has two different values to combine, which cannot be merged")
        return out

    def _enum(self, schema: dict[str, Any], pointer: str) -> str:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        if "const" in schema and "enum" in schema:
            values = [v for v in values if v in schema["enum"]]
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        if rest:  # the other keywords still apply: keep only the listed values they admit
            check = self._validator().evolve(schema=rest)
            values = [v for v in values if check.is_valid(v)]
        if not values:
            raise _NoValue(pointer, "no listed value is valid under the rest of the schema")
        options = [self._json_literal(v, pointer) for v in values]
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def _count(self, schema: dict[str, Any], low: str, high: str, pointer: str) -> tuple[int, int | None]:
        lo, hi = int(schema.get(low, 0)), schema.get(high)
        for key, value in ((low, lo), (high, hi)):
            if value is not None and value > MAX_COUNT:
                raise _Refused(f"{key}: {value}", pointer, f"is above {MAX_COUNT}, the most enforced")
        if hi is not None and lo > hi:
            raise _NoValue(pointer, f"{low} is above {high}")
        return lo, None if hi is None else int(hi)

    def _string(self, schema: dict[str, Any], pointer: str) -> str:
        lo, hi = self._count(schema, "minLength", "maxLength", pointer)
        fmt = schema.get("format")
        if fmt in _FORMATS:
            if lo or hi is not None:
                size = _FIXED_LENGTH.get(str(fmt))
                if size is None:
                    raise _Refused("minLength/maxLength", pointer, f"cannot be enforced with format {fmt}")
                if size < lo or (hi is not None and size > hi):
                    raise _NoValue(pointer, f"a {fmt} is {size} characters long")
            return f'"\\"" {self._primitive(str(fmt))} "\\""'
        if lo == 0 and hi is None:
            return self._primitive("string")
        char = self._primitive("char")
        count = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}" if hi is not None else f"{{{lo},}}"
        return f'"\\"" {char}{count} "\\""'

    def _number(self, schema: dict[str, Any], kind: str, pointer: str) -> str:
        """Only lower bounds the sign and the first digit can carry are enforced: >= 0 and (for
        integers) >= 1; any other bound would need the digits compared, and is refused."""
        low, exclusive = schema.get("minimum"), schema.get("exclusiveMinimum")
        if isinstance(exclusive, bool):  # draft 4: a flag on minimum
            low, exclusive = (None, low) if exclusive else (low, None)
        if low is None and exclusive is None:
            return self._primitive(kind)
        keyword, bound = ("minimum", low) if low is not None else ("exclusiveMinimum", exclusive)
        if kind == "integer":
            least = max(
                math.ceil(low) if low is not None else -math.inf,
                math.floor(exclusive) + 1 if exclusive is not None else -math.inf,
            )
            if least in (0, 1):
                return self._primitive("nonneg-integer" if least == 0 else "pos-integer")
        elif low == 0 and (exclusive is None or exclusive < 0):
            return self._primitive("nonneg-number")
        raise _Refused(
            f"{keyword}: {bound}",
            pointer,
            "is enforced only as a minimum of 0 (or, on an integer, a minimum of 1 or exclusiveMinimum 0)",
        )

    def _object(self, schema: dict[str, Any], name: str, pointer: str) -> str:
        declared: dict[str, Any] = dict(schema.get("properties", {}))
        required = list(schema.get("required", []))
        extra = schema.get("additionalProperties", True)
        # A schema for extra values lets extra pairs follow the declared ones; without one, an object
        # with properties gets only those (always valid), and one without any is free-form.
        extra_schema: Any = extra if isinstance(extra, dict) else (True if not declared and extra else None)
        for key in required:
            if key not in declared:  # required but not declared: its value follows additionalProperties
                if extra is False:
                    raise _NoValue(pointer, f"{key!r} is required but additionalProperties is false")
                declared[key] = extra if isinstance(extra, dict) else True
        pairs: list[tuple[str, bool]] = []
        for key, sub in declared.items():
            where = f"{pointer}/properties/{_escape_pointer(key)}"
            try:
                value = self._value(sub, f"{name}-{key}", where)
            except _NoValue:
                if key in required:
                    raise
                continue  # an optional property that admits no value is never written
            head = self.literal(json.dumps(key, ensure_ascii=False) + ":")
            pairs.append((f"{head} {value}", key in required))
        extra_kv = ""
        if extra_schema is not None:
            try:
                value = self._value(extra_schema, f"{name}-extra", f"{pointer}/additionalProperties")
            except _NoValue:
                value = ""
            if value:
                key_rule = self._key_excluding(declared, f"{name}-key") if declared else self._primitive("string")
                extra_kv = self.rule(f"{name}-extra-kv", f"{key_rule} {self.literal(':')} {value}")
        # Optional properties: two rules per position i, "first-i" (properties i.. when none was
        # written yet, so no leading comma) and "rest-i" (when one was: each then needs a comma).
        # Every subset of the optional ones, in declared order, comes out with its commas right, and
        # the grammar stays linear in the number of properties.
        comma = self.literal(",")
        rest = f"( {comma} {extra_kv} )*" if extra_kv else ""
        first = f"( {extra_kv} ( {comma} {extra_kv} )* )?" if extra_kv else ""
        for i in range(len(pairs) - 1, -1, -1):
            kv, req = pairs[i]
            if req:
                new_rest, new_first = _seq(comma, kv, rest), _seq(kv, rest)
            else:
                new_rest = _seq(f"( {comma} {kv} )?", rest)
                new_first = f"( {_seq(kv, rest)} | {first} )" if first else f"( {_seq(kv, rest)} )?"
            rest = self.rule(f"{name}-rest-{i}", new_rest)
            first = self.rule(f"{name}-first-{i}", new_first)
        return _seq('"{"', first, '"}"')

    def _key_excluding(self, names: Iterable[str], name: str) -> str:
        """A rule for a JSON string that is none of ``names``: an extra key must not repeat a declared
        one, whose value would then be replaced by one valid only under additionalProperties. One rule
        per trie node: a declared key's next unit leads on, any other unit frees the rest."""
        trie = _Trie()
        for key in names:
            units = _key_units(key)
            if units is None:
                continue
            node = trie
            for unit in units:
                node = node.kids.setdefault(unit, _Trie())
            node.end = True
        key_char = self._primitive("key-char")

        def emit(node: _Trie, rule_name: str) -> str:
            if not node.kids:
                return f"{key_char}+" if node.end else f"{key_char}*"
            options = []
            for unit, kid in node.kids.items():
                options.append(f"{self.literal(unit)} {emit(kid, rule_name)}")
            plain = "".join(_class_char(u) for u in node.kids if len(u) == 1)
            options.append(f'[^"\\\\\\x00-\\x1F{plain}] {key_char}*')
            escapes = "".join(_class_char(c) for c in _KEY_ESCAPES if "\\" + c not in node.kids)
            if escapes:
                options.append(f'"\\\\" [{escapes}] {key_char}*')
            body = "( " + " | ".join(options) + " )" + ("" if node.end else "?")
            return self.rule(rule_name, body)

        return self.rule(name, f'"\\"" {emit(trie, f"{name}-tail")} "\\""')

    def _array(self, schema: dict[str, Any], name: str, pointer: str) -> str:
        items: Any = schema.get("items", True)
        prefix_schemas: list[Any] = list(schema.get("prefixItems", []))
        items_at = f"{pointer}/items"
        if isinstance(items, list):  # draft 7 and before: a list of items is the prefix
            prefix_schemas, items, items_at = items, schema.get("additionalItems", True), f"{pointer}/additionalItems"
        lo, hi = self._count(schema, "minItems", "maxItems", pointer)
        prefix: list[str] = []
        for i, sub in enumerate(prefix_schemas):
            if hi is not None and i >= hi:
                break
            try:
                prefix.append(self._value(sub, f"{name}-{i}", f"{pointer}/prefixItems/{i}"))
            except _NoValue:
                hi = i  # no array can have an item here, so none is longer than i
                break
        n = len(prefix)
        item = ""
        if hi is None or hi > n:
            try:
                item = self._value(items, f"{name}-item", items_at)
            except _NoValue:
                item = ""
            if not item:
                hi = n
        if hi is not None and lo > hi:
            raise _NoValue(pointer, "minItems cannot be reached with the items allowed")
        comma = self.literal(",")
        if n == 0:
            if not item:
                return '"[" "]"'
            more = self.rule(f"{name}-more", f"{comma} {item}")
            top = None if hi is None else hi - 1
            if lo == 0:
                return f'"[" ( {_seq(item, self._repeat(more, 0, top))} )? "]"'
            return _seq('"["', item, self._repeat(more, lo - 1, top), '"]"')
        # Prefix items, each optional from minItems on (nested, so a later one only follows an
        # earlier one), then items up to maxItems.
        tail = ""
        if item and (hi is None or hi > n):
            more = self.rule(f"{name}-more", f"{comma} {item}")
            tail = self.rule(f"{name}-tail", self._repeat(more, max(0, lo - n), None if hi is None else hi - n))
        for k in range(n - 1, -1, -1):
            inner = _seq(comma if k else "", prefix[k], tail)
            tail = inner if k < lo else f"( {inner} )?"
        return f'"[" {tail} "]"'

    @staticmethod
    def _repeat(item: str, lo: int, hi: int | None) -> str:
        if hi is None:
            return f"{item}*" if lo == 0 else f"{item}+" if lo == 1 else f"{item}{{{lo},}}"
        if hi == 0:
            return ""
        return f"{item}?" if (lo, hi) == (0, 1) else f"{item}{{{lo}}}" if lo == hi else f"{item}{{{lo},{hi}}}"


def schema_to_gbnf(schema: dict[str, Any], *, param: str = "response_format.json_schema.schema") -> str:
    """The grammar of compact JSON values valid under ``schema`` (checked first: a 400 naming ``param``)."""
    builder = GBNFBuilder()
    return builder.build(builder.schema(schema, name="answer", param=param))


JSON_OBJECT_GBNF = schema_to_gbnf({"type": "object"})
