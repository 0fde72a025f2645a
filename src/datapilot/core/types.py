"""Message, request, output and usage types shared by every layer.

Plain slotted dataclasses: they cross every layer on the hot path, so they stay cheap to build.
The HTTP layer validates input with pydantic and converts to these.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool")
FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass(slots=True, frozen=True)
class ToolCall:
    """One function call an assistant asked for; ``arguments`` is a JSON object as text (OpenAI's form)."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True, frozen=True)
class Message:
    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message that called tools
    tool_call_id: str | None = None  # a tool message: which call it answers


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """A function the model may call: its JSON-schema ``parameters`` constrain the arguments."""

    name: str
    description: str = ""
    parameters: dict[str, object] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False

    def to_dict(self) -> dict[str, object]:
        fn: dict[str, object] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        if self.strict:
            fn["strict"] = True
        return {"type": "function", "function": fn}


ToolChoice = str  # "none" | "auto" | "required" | the name of one function


@dataclass(slots=True, frozen=True)
class ResponseFormat:
    """What shape the answer must have: ``text``, any JSON object, or JSON valid under ``schema``."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, object] | None = None
    name: str = "response"
    strict: bool = False

    def to_dict(self) -> dict[str, object]:
        if self.type != "json_schema":
            return {"type": self.type}
        spec: dict[str, object] = {"name": self.name, "schema": self.schema or {}}
        if self.strict:
            spec["strict"] = True
        return {"type": "json_schema", "json_schema": spec}


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.1


@dataclass(slots=True)
class ModelRequest:
    """One generation request: either chat ``messages`` or a raw ``prompt``."""

    model: str
    messages: list[Message] | None = None
    prompt: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Structured generation: at most one of response_format (json) and grammar (GBNF) constrains text;
    # tools with tool_choice let the model answer with calls instead.
    response_format: ResponseFormat | None = None
    grammar: str | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def is_constrained(self) -> bool:
        return self.wants_json or self.grammar is not None or self.uses_tools


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class Timing:
    """Measured per request: first-token latency, total latency and decode throughput."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None

    def mark_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def finish(self) -> None:
        self.finished_at = time.perf_counter()

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def latency_s(self) -> float:
        return (self.finished_at or time.perf_counter()) - self.started

    def tokens_per_second(self, completion_tokens: int) -> float:
        """Decode throughput: tokens after the first over the time after the first token."""
        if self.first_token_at is None or completion_tokens < 2:
            return 0.0
        decode = (self.finished_at or time.perf_counter()) - self.first_token_at
        return (completion_tokens - 1) / decode if decode > 0 else 0.0


@dataclass(slots=True, frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int] | None = None

    def to_dict(self) -> dict[str, object]:
        return {"token": self.token, "logprob": self.logprob, "bytes": self.bytes}


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    """One generated token's log-probability and the most likely alternatives at its position."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top: tuple[TopLogprob, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": self.bytes,
            "top_logprobs": [t.to_dict() for t in self.top],
        }


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call, as OpenAI streams them: the first piece of call ``index``
    carries its id and name, later pieces carry more of ``arguments``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_dict(self) -> dict[str, object]:
        fn: dict[str, object] = {"arguments": self.arguments}
        out: dict[str, object] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
            out["type"] = "function"
        if self.name is not None:
            fn = {"name": self.name, **fn}
        out["function"] = fn
        return out


@dataclass(slots=True)
class ModelChunk:
    """A piece of a streamed answer; the last one carries ``finish_reason`` and ``usage``."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timing: Timing | None = None
    tool_calls: list[ToolCallDelta] | None = None
    logprobs: list[TokenLogprob] | None = None

    @property
    def has_content(self) -> bool:
        return bool(self.text or self.tool_calls)


@dataclass(slots=True)
class ModelOutput:
    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str = ""
    timing: Timing | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class EmbeddingOutput:
    vectors: np.ndarray  # float32 [n, d], L2-normalised
    usage: Usage


@dataclass(slots=True)
class RerankOutput:
    scores: list[float]  # one relevance score per document, in the order given
    usage: Usage


@dataclass(slots=True, frozen=True)
class ModelInfo:
    name: str
    backend: str
    capabilities: frozenset[str]
    status: str = "ready"
    created: int = field(default_factory=lambda: int(time.time()))
    detail: str | None = None
