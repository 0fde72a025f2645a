"""The record of a run: every message, tool call, result and decision, in order, JSON-serialisable.

The events a run streams are its trace records, so what a UI showed and what was stored are the same.
``Trace.replay`` gives the records back in order; ``ReplayClient`` answers each model request with the
reply recorded for it (text, tool calls and how it ended), and says the model has the capabilities the
run used, so running the same team again over a saved trace repeats the run exactly, without a model.

Whether a step used the structured path and why it still fell back is on its record: ``plan`` and
``review`` records and ``step_done`` carry ``structured`` and ``fallback_reason``; a model reply's
``message`` record carries ``structured`` (``json_schema`` or ``tools``), ``finish_reason`` and any
``tool_calls``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datapilot.core.client import collect
from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import (
    FinishReason,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
)

TRACE_VERSION = 1


def request_key(request: ModelRequest) -> str:
    """Identifies a model request by what the model sees (model, messages or prompt), not by its id."""
    if request.messages is not None:
        # Tool calls and the ids tool results answer are part of what the model sees; kept out of the
        # key when absent, so keys of traces saved before tool calls stay the same.
        body: Any = [
            [m.role, m.content]
            + ([[[c.name, c.arguments] for c in m.tool_calls]] if m.tool_calls else [])
            + ([m.tool_call_id] if m.tool_call_id else [])
            for m in request.messages
        ]
    else:
        body = request.prompt
    raw = json.dumps([request.model, body], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass
class Trace:
    goal: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: float = field(default_factory=time.time)
    records: list[dict[str, Any]] = field(default_factory=list)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """Stamp a record with its sequence number, run id and time since the start, and keep it."""
        stamped = {
            "seq": len(self.records),
            "run_id": self.run_id,
            "t": round(time.perf_counter() - self._t0, 3),
            **record,
        }
        self.records.append(stamped)
        return stamped

    def replay(self, *types: str) -> Iterator[dict[str, Any]]:
        """The records in the order they happened, optionally only those of the given types."""
        for r in self.records:
            if not types or r["type"] in types:
                yield r

    def model_replies(self) -> dict[str, list[tuple[str, Usage]]]:
        """Recorded model replies (text and token usage) by request key, in order."""
        out: dict[str, list[tuple[str, Usage]]] = defaultdict(list)
        for r in self.replay("message"):
            if r.get("role") == "assistant" and r.get("key"):
                usage = r.get("usage") or {}
                used = Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
                out[r["key"]].append((r["content"], used))
        return dict(out)

    def model_outputs(self) -> dict[str, list[ModelOutput]]:
        """Recorded model outputs (text, tool calls, finish reason and usage) by request key, in order."""
        out: dict[str, list[ModelOutput]] = defaultdict(list)
        for r in self.replay("message"):
            if r.get("role") == "assistant" and r.get("key"):
                usage = r.get("usage") or {}
                used = Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
                calls = [
                    ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                    for c in r.get("tool_calls") or []
                ]
                finish: FinishReason = r.get("finish_reason") or ("tool_calls" if calls else "stop")
                out[r["key"]].append(ModelOutput(r["content"], finish, used, tool_calls=calls))
        return dict(out)

    def capabilities(self) -> frozenset[str]:
        """The structured capabilities the run used (its ``start`` record), for replaying it."""
        start = next(self.replay("start"), None)
        return frozenset((start or {}).get("capabilities", ()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TRACE_VERSION,
            "run_id": self.run_id,
            "goal": self.goal,
            "started": self.started,
            "records": self.records,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, default=str)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(indent=1), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            raise InvalidRequestError("not an agent trace: expected an object with 'records'")
        return cls(
            str(data.get("goal", "")),
            str(data.get("run_id", "")),
            float(data.get("started", 0.0)),
            list(data["records"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def render(self, width: int = 160) -> str:
        """A readable transcript, one line per record."""
        return "\n".join(describe(r, width) for r in self.records)


def _short(text: Any, width: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[: width - 3] + "..."


def describe(r: dict[str, Any], width: int = 160) -> str:
    """One record as one line of text (the CLI prints these as a run goes)."""
    kind = r.get("type", "?")
    who = f"[{r['step']}:{r.get('agent', '')}] " if r.get("step") is not None else ""
    if kind == "start":
        body = f"goal: {r['goal']} (agents: {', '.join(r.get('agents', []))})"
    elif kind == "plan":
        steps = "; ".join(
            f"{s['id']}. {s['agent']}: {s['task']}" + (f" (after {s['depends_on']})" if s["depends_on"] else "")
            for s in r["steps"]
        )
        body = f"plan ({r['source']}): {steps}"
    elif kind == "step_start":
        body = f"start: {r['task']}"
    elif kind == "message":
        body = f"{r['role']}: {r['content']}"
    elif kind == "tool_call":
        body = f"call {r['tool']}({json.dumps(r.get('args'), ensure_ascii=False, default=str)})"
    elif kind == "tool_result":
        body = f"{'ok' if r['ok'] else 'failed'} {r['tool']}: {r['observation']}"
    elif kind == "chart":
        body = f"chart {r['id']} ({r['spec']['kind']}): {r['spec'].get('title', '')}"
    elif kind == "step_done":
        body = f"done ({'ok' if r['ok'] else 'failed'}{', fallback' if r.get('fallback') else ''}): {r['summary']}"
    elif kind == "review":
        body = f"review round {r['round']}: {'approved' if r['approved'] else 'revise'}: {r['notes']}"
    elif kind == "report":
        body = f"report: {len(r['markdown'])} characters, {len(r.get('charts', []))} chart(s)"
    elif kind == "done":
        body = f"done: {r.get('rounds')} round(s), {r.get('model_calls')} model call(s), {r.get('tokens')} tokens"
    elif kind == "error":
        body = f"error: {r.get('error', {}).get('message')}"
    else:
        body = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("seq", "run_id", "t", "type"))
    return _short(f"{r.get('t', 0):7.2f}s {kind:<11} {who}{body}", width)


class ReplayClient:
    """An ``LLMClient`` that answers from a trace: each request gets the next reply recorded for it."""

    def __init__(self, trace: Trace, model: str = "replay") -> None:
        self._outputs = {k: deque(v) for k, v in trace.model_outputs().items()}
        self._capabilities = trace.capabilities()
        self.model = model
        start = next(trace.replay("start"), None)
        self._names = list(dict.fromkeys([model, *([start["model"]] if start and start.get("model") else [])]))

    def _next(self, request: ModelRequest) -> ModelOutput:
        queue = self._outputs.get(request_key(request))
        if not queue:
            raise InvalidRequestError("the trace has no recorded reply for this request: the run diverged")
        return queue.popleft()

    async def generate(self, request: ModelRequest) -> ModelOutput:
        return await collect(self.stream(request), request.model)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        out = self._next(request)
        deltas = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(out.tool_calls)]
        yield ModelChunk(out.text, finish_reason=out.finish_reason, usage=out.usage, tool_calls=deltas or None)

    async def models(self) -> list[ModelInfo]:
        """This client's name and the recorded run's model, with the capabilities the run used."""
        return [ModelInfo(n, "replay", frozenset({"chat"}) | self._capabilities) for n in self._names]
