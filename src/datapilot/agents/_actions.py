"""Reading an agent's next action out of a model reply.

The JSON action format, for models without OpenAI ``tools``: one object per reply, either
``{"tool": NAME, "args": {...}}`` or ``{"final": TEXT}`` (a ``"thought"`` may ride along). Parsing is
tolerant: code fences and prose around the object, single quotes, trailing commas, unquoted keys and
unclosed brackets are repaired (``datapilot.text2sql.repair_json``), and the common key spellings of
other agent frameworks are accepted (``action``/``action_input``, ``name``/``arguments``,
``answer``/``final_answer``), and so is the call envelope models are shown when they are offered
tools (``{"tool_calls": [{"name": ..., "arguments": {...}}]}``, its first call). A reply with no
braces at all is a plain-text final answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from datapilot.agents._errors import ActionParseError
from datapilot.text2sql import repair_json

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.S)
_TOOL_KEYS = ("tool", "action", "tool_name", "name", "function")
_ARG_KEYS = ("args", "arguments", "action_input", "input", "parameters", "params", "tool_input")
_FINAL_KEYS = ("final", "final_answer", "answer", "response", "result")
_FINISH = {"final", "finish", "final_answer", "answer", "done", "respond"}

ACTION_FORMAT = (
    "Reply with exactly one JSON object and nothing else. To use a tool: "
    '{"thought": "why", "tool": "TOOL_NAME", "args": {"ARG": "VALUE"}}. '
    'When you are done: {"final": "your answer"}.'
)


@dataclass(slots=True)
class Action:
    tool: str | None = None
    args: Any = field(default_factory=dict)
    final: str | None = None
    thought: str = ""
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "args": self.args,
            "final": self.final,
            "thought": self.thought,
            "repaired": self.repaired,
        }


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for k in keys:
        if k in lowered and lowered[k] not in (None, ""):
            return lowered[k]
    return None


def _object(text: str) -> tuple[dict[str, Any] | None, bool]:
    """The first JSON object in ``text`` and whether it needed repair; ``None`` when there is none."""
    candidates = [body for _, body in _FENCE.findall(text) if "{" in body] + [text]
    for candidate in candidates:
        start = candidate.find("{")
        if start == -1:
            continue
        try:
            obj, _ = json.JSONDecoder().raw_decode(candidate[start:])
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(obj, dict):
                return obj, False
        try:
            obj = json.loads(repair_json(candidate[start:]))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj, True
    return None, True


def parse_action(text: str) -> Action:
    """The action in a model reply; raises ``ActionParseError`` saying what is wrong when none can be read."""
    stripped = (text or "").strip()
    if not stripped:
        raise ActionParseError("the reply was empty")
    if "{" not in stripped:
        return Action(final=stripped)
    obj, repaired = _object(stripped)
    if obj is None:
        raise ActionParseError("the reply has a '{' but no JSON object could be read from it, even after repair")
    thought = str(_first(obj, ("thought", "thoughts", "reasoning")) or "")
    calls = _first(obj, ("tool_calls",))
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        obj = calls[0]
    name = _first(obj, _TOOL_KEYS)
    args = _first(obj, _ARG_KEYS)
    if isinstance(name, dict):  # {"function": {"name": ..., "arguments": ...}} (OpenAI's shape)
        args = name.get("arguments", args)
        name = name.get("name")
    final = _first(obj, _FINAL_KEYS)
    if isinstance(name, str) and name.strip().lower() in _FINISH:
        text_value = final if final is not None else args
        if isinstance(text_value, dict):
            text_value = _first(text_value, (*_FINAL_KEYS, "text", "content")) or json.dumps(text_value)
        return Action(final=str(text_value or ""), thought=thought, repaired=repaired)
    if isinstance(name, str) and name.strip():
        return Action(tool=name.strip(), args=args if args is not None else {}, thought=thought, repaired=repaired)
    if final is not None:
        return Action(final=final if isinstance(final, str) else json.dumps(final), thought=thought, repaired=repaired)
    keys = ", ".join(map(str, obj)) or "none"
    raise ActionParseError(f'the JSON object has neither "tool" nor "final" (its keys: {keys})')
