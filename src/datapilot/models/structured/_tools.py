"""Tool calling for models without a native tool format: a prompt, a constrained envelope, a parser.

The model is told about the functions in its system text and answers a call as one compact JSON
envelope, ``{"tool_calls":[{"name":"f","arguments":{...}}]}``, whose grammar admits only the declared
names and arguments valid under each function's schema. ``ToolCallParser`` turns that text back into
OpenAI's tool-call deltas while it streams, so clients see the same stream OpenAI sends.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from datapilot.core.types import Message, ModelChunk, ModelRequest, ToolCallDelta, ToolSpec
from datapilot.models.structured._json_schema import GBNFBuilder

ENVELOPE_KEY = "tool_calls"
# A tiny model asked for "parallel" calls can repeat one forever: bounded, and said so in the docs.
MAX_PARALLEL_CALLS = 4


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _selected(request: ModelRequest) -> list[ToolSpec]:
    choice = request.tool_choice
    if choice in ("auto", "required", "none"):
        return list(request.tools)
    return [t for t in request.tools if t.name == choice]


def _must_call(request: ModelRequest) -> bool:
    return request.tool_choice not in ("auto", "none")


def envelope_schema(request: ModelRequest) -> dict[str, object]:
    """The JSON schema of a call envelope: for backends that enforce schemas but not grammars."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in _selected(request)
    ]
    items: dict[str, object] = dict(calls[0]) if len(calls) == 1 else {"anyOf": calls}
    limit = MAX_PARALLEL_CALLS if request.parallel_tool_calls else 1
    return {
        "type": "object",
        "properties": {ENVELOPE_KEY: {"type": "array", "items": items, "minItems": 1, "maxItems": limit}},
        "required": [ENVELOPE_KEY],
    }


def envelope_grammar(request: ModelRequest) -> str:
    """GBNF for the envelope; with ``tool_choice`` auto, plain text (not starting with ``{``) too."""
    b = GBNFBuilder()
    alternatives = []
    for i, tool in enumerate(request.tools):
        if tool not in _selected(request):
            continue
        args = b.schema(tool.parameters, name=f"{tool.name}-arguments", param=f"tools.{i}.function.parameters")
        head = b.literal(f'{{"name":"{tool.name}","arguments":')
        alternatives.append(b.rule(f"call-{tool.name}", f"{head} {args} {b.literal('}')}"))
    call = b.rule("call", " | ".join(alternatives))
    more = f"({b.literal(',')} {call}){{0,{MAX_PARALLEL_CALLS - 1}}}" if request.parallel_tool_calls else ""
    calls = b.rule("calls", f"{b.literal('{' + json.dumps(ENVELOPE_KEY) + ':[')} {call} {more} {b.literal(']}')}")
    if _must_call(request) or request.tool_choice == "required":
        return b.build(f'" "? {calls}')
    # Free text may not open with "{" (after an optional space), so the two branches never overlap.
    text = b.rule("text", '([^{ \\n] | " " [^{]) [^\\x00]*')
    return b.build(f'" "? {calls} | {text}')


def _describe(tool: ToolSpec) -> str:
    params = json.dumps(tool.parameters, ensure_ascii=False, separators=(",", ":"))
    about = f": {tool.description.strip()}" if tool.description.strip() else ""
    return f"- {tool.name}{about} Arguments (JSON schema): {params}"


def tool_instructions(request: ModelRequest) -> str:
    tools = _selected(request)
    example = json.dumps({ENVELOPE_KEY: [{"name": tools[0].name, "arguments": {}}]}, separators=(",", ":")).replace(
        "{}", "{...}"
    )
    lines = ["You can call these functions:", *(_describe(t) for t in tools)]
    lines.append(f"To call a function, answer with only a JSON object like {example}.")
    if request.tool_choice == "auto":
        lines.append("If no function is needed, answer the user in plain text instead.")
    else:
        lines.append("Answer now with a function call.")
    lines.append("After a function's result is given, use it to answer the user.")
    return "\n".join(lines)


def render_calls(message: Message) -> str:
    calls = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in message.tool_calls]
    return json.dumps({ENVELOPE_KEY: calls}, ensure_ascii=False, separators=(",", ":"))


def prompt_messages(request: ModelRequest) -> list[Message]:
    """The conversation with tools described in the system text and calls and results as plain turns,
    for models whose prompt format knows nothing of tools."""
    messages = request.messages or []
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[Message] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            text = render_calls(m)
            out.append(Message("assistant", f"{m.content.strip()}\n{text}".strip() if m.content.strip() else text))
        elif m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "the function")
            out.append(Message("user", f"Result of {name}: {m.content}"))
        else:
            out.append(Message(m.role, m.content, m.name))
    return with_instruction(out, tool_instructions(request)) if request.uses_tools else out


def with_instruction(messages: list[Message], instruction: str) -> list[Message]:
    """The conversation with ``instruction`` added to its system text (or as one)."""
    out = list(messages)
    if out and out[0].role in ("system", "developer"):
        out[0] = Message(out[0].role, f"{out[0].content.strip()}\n\n{instruction}".strip())
    else:
        out.insert(0, Message("system", instruction))
    return out


_OPEN = re.compile(r'\s*\{\s*"tool_calls"\s*:\s*\[\s*')
_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_NEXT = re.compile(r"\s*\}\s*(,|\]\s*\}\s*$)\s*")


@dataclass(slots=True)
class ToolCallParser:
    """Reads a model's answer as it streams: plain text passes through; a call envelope becomes
    tool-call deltas (the id and name first, then the arguments as they are written)."""

    mode: str = "undecided"  # undecided | text | calls | done
    stage: str = "open"  # within calls: open | head | args | sep
    buf: str = ""
    pos: int = 0
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    calls: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def feed(self, piece: str) -> tuple[str, list[ToolCallDelta]]:
        """Text and deltas that ``piece`` completes."""
        self.buf += piece
        if self.mode == "undecided":
            stripped = self.buf.lstrip()
            if not stripped:
                return "", []
            if stripped[0] != "{":
                self.mode, text, self.buf = "text", stripped, ""
                return text, []
            self.mode = "calls"
        if self.mode == "text":
            text, self.buf = self.buf, ""
            return text, []
        if self.mode != "calls":
            return "", []
        return "", self._scan()

    def _scan(self) -> list[ToolCallDelta]:
        deltas: list[ToolCallDelta] = []
        while self.mode == "calls":
            if self.stage == "open":
                m = _OPEN.match(self.buf, self.pos)
                if not m:
                    return deltas
                self.pos, self.stage = m.end(), "head"
            elif self.stage == "head":
                m = _HEAD.match(self.buf, self.pos)
                if not m:
                    return deltas
                name = json.loads(f'"{m.group(1)}"')
                call_id = new_call_id()
                self.calls.append((call_id, name, []))
                deltas.append(ToolCallDelta(len(self.calls) - 1, call_id, name, ""))
                self.pos, self.stage, self.depth = m.end(), "args", 0
            elif self.stage == "args":
                start = self.pos
                done = self._scan_arguments()
                if self.pos > start:
                    piece = self.buf[start : self.pos]
                    self.calls[-1][2].append(piece)
                    deltas.append(ToolCallDelta(len(self.calls) - 1, arguments=piece))
                if not done:
                    return deltas
                self.stage = "sep"
            else:
                m = _NEXT.match(self.buf, self.pos)
                if not m:
                    return deltas  # the separator may still be arriving
                self.pos = m.end()
                if m.group(1) == ",":
                    self.stage = "head"
                else:
                    self.mode = "done"
        return deltas

    def _scan_arguments(self) -> bool:
        """Advance over argument text; True once the arguments' JSON value is complete."""
        buf = self.buf
        while self.pos < len(buf):
            ch = buf[self.pos]
            self.pos += 1
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return True
            elif self.depth == 0 and not ch.isspace():
                return False  # not an object: left for finish() to report as text
        return False

    def finish(self) -> tuple[str, bool]:
        """At the end of the answer: text still held back, and whether any call was made."""
        if self.mode == "calls" and not self.calls:
            text, self.buf = self.buf.strip(), ""
            return text, False
        if self.mode == "undecided":
            return self.buf.strip(), False
        return "", bool(self.calls)


async def parse_tool_stream(chunks: AsyncIterator[ModelChunk]) -> AsyncIterator[ModelChunk]:
    """A backend's streamed envelope text, as content or tool-call deltas; ``finish_reason`` becomes
    ``tool_calls`` when a call was made and the answer ended normally."""
    parser = ToolCallParser()
    async for chunk in chunks:
        text, deltas = parser.feed(chunk.text)
        if chunk.finish_reason is None:
            if text or deltas:
                yield ModelChunk(text, tool_calls=deltas or None, logprobs=chunk.logprobs)
            continue
        tail, called = parser.finish()
        finish = "tool_calls" if called and chunk.finish_reason == "stop" else chunk.finish_reason
        yield ModelChunk(
            text + tail,
            finish,
            chunk.usage,
            chunk.timing,
            tool_calls=deltas or None,
            logprobs=chunk.logprobs,
        )
