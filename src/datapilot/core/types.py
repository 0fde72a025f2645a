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
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(slots=True, frozen=True)
class Message:
    role: str
    content: str
    name: str | None = None


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

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


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


@dataclass(slots=True)
class ModelChunk:
    """A piece of a streamed answer; the last one carries ``finish_reason`` and ``usage``."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timing: Timing | None = None


@dataclass(slots=True)
class ModelOutput:
    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str = ""
    timing: Timing | None = None


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
