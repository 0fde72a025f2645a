"""Getting SQL and structured answers out of whatever a model returns.

Models wrap SQL in code fences, in JSON (often broken: single quotes, trailing commas, unquoted keys,
raw newlines inside strings, a missing closing brace), or in prose. ``extract_sql`` and
``parse_answer`` accept all of these; ``repair_json`` fixes the common JSON breakages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot.errors import SqlglotError

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.S)
_SQL_START = re.compile(r"(?<![\w.])(WITH|SELECT)\b", re.I)
_STATEMENT_START = re.compile(
    r"(?<![\w.])(WITH|SELECT|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|TRUNCATE|REPLACE|MERGE|PRAGMA|ATTACH|"
    r"DETACH|COPY|GRANT|VACUUM|CALL|EXEC|SET)\b",
    re.I,
)


@dataclass(slots=True)
class ParsedAnswer:
    """A model's structured answer: ``{"thoughts": ..., "sql": ..., "chart": ...}`` and friends."""

    sql: str | None
    thoughts: str = ""
    chart: str | None = None
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    repaired: bool = False  # the JSON needed fixing


def _strip_statement(sql: str) -> str:
    """The statements in ``sql`` without the prose after them: text after a ';' is kept only while it
    starts another statement, so "SELECT 1; DROP TABLE t" stays whole (and the guard refuses it)."""
    sql = sql.strip().strip("`").strip()
    pieces = sql.split(";")
    kept = [pieces[0]]
    for piece in pieces[1:]:
        if not _STATEMENT_START.match(piece.lstrip()):
            break
        kept.append(piece)
    return ";".join(kept).strip()


def _parses(sql: str, dialect: str | None) -> bool:
    try:
        return len([s for s in sqlglot.parse(sql, read=dialect) if s is not None]) >= 1
    except SqlglotError:
        return False


def _prose_sql(text: str) -> str | None:
    """The first statement in free text: from a SQL keyword to ';', a blank line or the end."""
    m = _STATEMENT_START.search(text)
    if not m:
        return None
    rest = text[m.start() :].split("\n\n")[0]
    return _strip_statement(rest) or None


def extract_sql(text: str, *, prefix: str = "", dialect: str | None = None) -> str | None:
    """The SQL in a model's answer, or ``None``.

    Tried in order: a fenced block (```sql ... ```), a JSON answer with a ``sql`` field, the completion
    of ``prefix`` (a prompt that ended with ``SELECT`` gets the rest of the query back), and finally the
    first statement in prose. Whatever it finds is returned unjudged: the guard decides if it may run.
    """
    text = text or ""
    for lang, body in _FENCE.findall(text):
        body = body.strip()
        if lang.lower() in ("json", "") and body.startswith("{"):
            parsed = parse_answer(body)
            if parsed.sql:
                return parsed.sql
        if body and lang.lower() not in ("json",):
            return _strip_statement(body)
    stripped = text.strip()
    if stripped.startswith("{") or '"sql"' in stripped or "'sql'" in stripped:
        parsed = parse_answer(stripped)
        if parsed.sql:
            return parsed.sql
    if prefix:
        continued = text.split("\n\n")[0]
        if prefix[-1:].isspace():
            continued = continued.lstrip(" ")  # "SELECT " + " COUNT(*)" is one space
        candidate = _strip_statement(prefix + continued)
        if _parses(candidate, dialect):
            return candidate
    return _prose_sql(text)


def repair_json(text: str) -> str:
    """Best-effort fixes for the JSON models write: fences and prose around it, single quotes, Python
    literals, unquoted keys, trailing commas, raw newlines in strings, unclosed brackets and strings."""
    s = text.strip()
    m = _FENCE.search(s)
    if m and "{" in m.group(2):
        s = m.group(2)
    start = s.find("{")
    if start == -1:
        return s
    s = s[start:]
    out: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == "\\" and i + 1 < len(s):
                out.append(s[i : i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
                out.append('"')
            elif ch == '"':  # a double quote inside a single-quoted string
                out.append('\\"')
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            else:
                out.append(ch)
            i += 1
            continue
        if ch in "\"'":
            quote = ch
            out.append('"')
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            out.append(ch)
        elif ch in "}]":
            if stack:
                stack.pop()
            out.append(ch)
            if not stack:
                break  # anything after the outermost object is prose
        else:
            out.append(ch)
        i += 1
    if quote:
        out.append('"')
    out.extend(reversed(stack))
    fixed = "".join(out)
    fixed = re.sub(r"\bTrue\b", "true", fixed)
    fixed = re.sub(r"\bFalse\b", "false", fixed)
    fixed = re.sub(r"\bNone\b", "null", fixed)
    fixed = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', fixed)  # unquoted keys
    fixed = re.sub(r",\s*([}\]])", r"\1", fixed)  # trailing commas
    return fixed


def _loads_object(text: str) -> tuple[dict[str, Any] | None, bool]:
    start = text.find("{")
    if start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(obj, dict):
                return obj, False
        except json.JSONDecodeError:
            pass
    try:
        obj = json.loads(repair_json(text))
    except json.JSONDecodeError:
        return None, True
    return (obj, True) if isinstance(obj, dict) else (None, True)


_FIELD = r"[\"']?{name}[\"']?\s*[:=]\s*[\"'](.*?)(?<!\\)[\"']\s*(?:,|\}}|$)"


def _field(text: str, *names: str) -> str | None:
    for name in names:
        m = re.search(_FIELD.format(name=name), text, re.S | re.I)
        if m:
            return m.group(1).replace('\\"', '"').replace("\\n", "\n").strip()
    return None


def _first(obj: dict[str, Any], *names: str) -> Any:
    lowered = {k.lower(): v for k, v in obj.items()}
    for name in names:
        if lowered.get(name) not in (None, ""):
            return lowered[name]
    return None


def parse_answer(text: str) -> ParsedAnswer:
    """A structured answer from a model's text, repaired when malformed; ``sql`` is ``None`` when
    nothing usable is there. Keys are matched loosely (``sql``/``query``/``SQL``, ``chart``/
    ``display_type``/``chart_type``, ``thoughts``/``thought``/``reasoning``)."""
    obj, repaired = _loads_object(text or "")
    if obj is None:
        sql = _field(text or "", "sql", "query")
        if sql is None:
            return ParsedAnswer(None, repaired=True)
        return ParsedAnswer(
            _strip_statement(sql),
            _field(text, "thoughts", "thought") or "",
            _field(text, "chart", "display_type", "chart_type"),
            _field(text, "title"),
            repaired=True,
        )
    sql = _first(obj, "sql", "query", "sql_query")
    chart = _first(obj, "chart", "display_type", "chart_type", "display")
    thoughts = _first(obj, "thoughts", "thought", "reasoning", "explanation")
    title = _first(obj, "title", "name")
    return ParsedAnswer(
        _strip_statement(str(sql)) if sql is not None else None,
        str(thoughts) if thoughts is not None else "",
        str(chart) if chart is not None else None,
        str(title) if title is not None else None,
        obj,
        repaired,
    )


def parse_answer_list(text: str) -> list[ParsedAnswer]:
    """Several structured answers: a JSON array of objects (or ``{"analyses": [...]}``), repaired
    when malformed; failing that, every ``{...}`` object found in the text."""
    s = (text or "").strip()
    m = _FENCE.search(s)
    if m and ("[" in m.group(2) or "{" in m.group(2)):
        s = m.group(2).strip()
    candidates: list[Any] = []
    start = s.find("[")
    brace = s.find("{")
    if start != -1 and (brace == -1 or start < brace):
        try:
            candidates = json.loads(s[start:])
        except json.JSONDecodeError:
            try:
                candidates = json.loads(repair_json('{"items": ' + s[start:] + "}")).get("items", [])
            except json.JSONDecodeError:
                candidates = []
    elif brace != -1:
        obj, _ = _loads_object(s)
        if obj is not None:
            inner = _first(obj, "analyses", "charts", "items", "queries")
            candidates = inner if isinstance(inner, list) else [obj]
    if candidates:
        out = [parse_answer(json.dumps(c)) for c in candidates if isinstance(c, dict)]
        return [a for a in out if a.sql]
    found = []
    for piece in re.findall(r"\{[^{}]*\}", s, re.S):
        a = parse_answer(piece)
        if a.sql:
            found.append(a)
    return found
