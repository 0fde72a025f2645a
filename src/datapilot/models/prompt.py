"""Turning chat messages into a prompt, and cutting generated text at stop strings.

A model whose GGUF carries a chat template is prompted through that template. A base model without
one (the embedded Gemma 3 270M) answers chat prompts with junk but continues a written dialogue
well, so it gets a completion-style transcript that opens with a few example exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import Message, ModelRequest

DEFAULT_SYSTEM = (
    "The following is a conversation between a user and a helpful, knowledgeable assistant. "
    "The assistant answers in one or two short, correct sentences."
)

FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are there in a week?", "There are seven days in a week."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
)


@dataclass(slots=True)
class FormattedPrompt:
    text: str
    stop: list[str] = field(default_factory=list)
    add_bos: bool = True
    strip_leading_space: bool = False


def few_shot_dialogue(messages: list[Message]) -> FormattedPrompt:
    """A plain transcript: system text, example turns, the conversation, then ``Assistant:``."""
    if not messages:
        raise InvalidRequestError("messages must contain at least one message", param="messages")
    system = [m.content.strip() for m in messages if m.role in ("system", "developer") and m.content.strip()]
    lines = [" ".join(system) if system else DEFAULT_SYSTEM, ""]
    for question, answer in FEW_SHOT_EXAMPLES:
        lines += [f"User: {question}", f"Assistant: {answer}", ""]
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        speaker = {"user": "User", "assistant": "Assistant", "tool": "Tool"}[m.role]
        lines.append(f"{speaker}: {m.content.strip()}")
        if m.role == "assistant":
            lines.append("")
    lines.append("Assistant:")
    return FormattedPrompt(
        "\n".join(lines), stop=["\nUser:", "\nAssistant:", "\nTool:", "\n\n"], strip_leading_space=True
    )


def format_chat(tokenizer: Any, request: ModelRequest) -> FormattedPrompt:
    """A request as a prompt for a Hugging Face tokenizer: its chat template when it has one, the
    few-shot dialogue otherwise, the prompt as it is for completions."""
    if request.messages is None:
        return FormattedPrompt(request.prompt or "")
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in request.messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return FormattedPrompt(text, add_bos=False)
    return few_shot_dialogue(request.messages)


class StopFilter:
    """Streams text while holding back any tail that could still become a stop string."""

    __slots__ = ("_pending", "_stops", "stopped")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is safe to emit now; sets ``stopped`` once a stop string appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        text = self._pending + piece
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:n]):
                    hold = n
                    break
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return "" if self.stopped else out
