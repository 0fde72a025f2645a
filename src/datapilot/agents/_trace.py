"""The record of a run: every message, tool call, result and decision, in order, JSON-serialisable.

The events a run streams are its trace records, so what a UI showed and what was stored are the same.
``Trace.replay`` gives the records back in order; ``ReplayClient`` answers each model request with the
reply recorded for it, so running the same team again over a saved trace repeats the run exactly,
without a model.
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
from datapilot.core.types import ModelChunk, ModelInfo, ModelOutput, ModelRequest, Usage

TRACE_VERSION = 1


def request_key(request: ModelRequest) -> str:
    """Identifies a model request by what the model sees (model, messages or prompt), not by its id."""
    if request.messages is not None:
        body: Any = [[m.role, m.content] for m in request.messages]
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
        self._replies = {k: deque(v) for k, v in trace.model_replies().items()}
        self.model = model

    def _next(self, request: ModelRequest) -> tuple[str, Usage]:
        queue = self._replies.get(request_key(request))
        if not queue:
            raise InvalidRequestError("the trace has no recorded reply for this request: the run diverged")
        return queue.popleft()

    async def generate(self, request: ModelRequest) -> ModelOutput:
        return await collect(self.stream(request), request.model)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        text, usage = self._next(request)
        yield ModelChunk(text, finish_reason="stop", usage=usage)

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(self.model, "replay", frozenset({"chat"}))]
