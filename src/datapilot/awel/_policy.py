"""Per-node error policy: fail (the default), retry with backoff, fall back to a value, or log and skip."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Action = Literal["fail", "retry", "fallback", "skip"]


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What a node does when it raises. Retry waits ``backoff * 2**attempt`` (capped) between tries;
    when the retries are spent it fails. Skip logs ``message`` and skips the node, which skips its
    downstream nodes until a join."""

    action: Action = "fail"
    retries: int = 0
    backoff: float = 0.1
    max_backoff: float = 5.0
    fallback: Any = None
    message: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("fail", "retry", "fallback", "skip"):
            raise ValueError(f"unknown error action {self.action!r}: use fail, retry, fallback or skip")
        if self.retries < 0 or self.backoff < 0:
            raise ValueError("retries and backoff must not be negative")

    @property
    def is_default(self) -> bool:
        return self == FAIL

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v != getattr(FAIL, k) or k == "action"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorPolicy:
        return cls(**data)


FAIL = ErrorPolicy()


def Fail() -> ErrorPolicy:
    return FAIL


def Retry(times: int, backoff: float = 0.1, max_backoff: float = 5.0) -> ErrorPolicy:
    return ErrorPolicy("retry", retries=times, backoff=backoff, max_backoff=max_backoff)


def Fallback(value: Any) -> ErrorPolicy:
    return ErrorPolicy("fallback", fallback=value)


def Skip(message: str | None = None) -> ErrorPolicy:
    return ErrorPolicy("skip", message=message)
