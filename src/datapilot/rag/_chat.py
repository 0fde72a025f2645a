"""The ``knowledge`` chat scene: retrieve, number the passages in the prompt, answer, cite.

``knowledge_chat`` is an async generator of ``KnowledgeChatEvent``s: ``citations`` first (the
numbered passages the model is given, so a UI can show sources while the answer streams), then
``delta`` events with the answer text, then ``done`` with the whole answer, the numbers it cited and
the citations again, each marked ``cited`` when the answer refers to it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from datapilot.core.client import LLMClient
from datapilot.core.types import Message, ModelRequest, SamplingParams, Usage
from datapilot.rag._knowledge import KnowledgeBase
from datapilot.rag._types import Citation, KnowledgeAnswer, KnowledgeChatEvent, Passage

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages below the question. "
    "Answer in one to three sentences and cite the passages you used by number in square brackets, like [1]. "
    "If the passages do not contain the answer, say that the knowledge space does not say."
)
NOTHING_FOUND = "I found nothing about that in the knowledge space {space!r}."
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def _where(p: Passage) -> str:
    parts = [p.source]
    if p.chunk.page is not None:
        parts.append(f"page {p.chunk.page}")
    if p.chunk.section:
        parts.append(p.chunk.section)
    return ", ".join(parts)


def citations_for(passages: list[Passage]) -> list[Citation]:
    return [
        Citation(n, p.chunk.document_id, p.source, p.chunk.page, p.chunk.section, p.chunk.text, p.chunk.id, p.score)
        for n, p in enumerate(passages, 1)
    ]


def build_prompt(question: str, passages: list[Passage], max_chars: int) -> str:
    """The user turn: the numbered passages (each cut to its share of ``max_chars``), then the question."""
    share = max(max_chars // max(len(passages), 1), 200)
    blocks = []
    for n, p in enumerate(passages, 1):
        text = " ".join(p.chunk.text.split())
        if len(text) > share:
            text = text[:share].rsplit(" ", 1)[0] + " ..."
        blocks.append(f"[{n}] ({_where(p)}) {text}")
    return "Passages:\n" + "\n".join(blocks) + f"\n\nQuestion: {question.strip()}"


def cited_numbers(answer: str, count: int) -> list[int]:
    found: list[int] = []
    for m in _CITE.finditer(answer):
        for part in m.group(1).split(","):
            n = int(part)
            if 1 <= n <= count and n not in found:
                found.append(n)
    return sorted(found)


@dataclass(slots=True)
class KnowledgeTurn:
    """One question on its way through retrieve -> answer -> cite (what the ``rag_*`` operators pass)."""

    space: str
    question: str
    model: str
    history: list[Message] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


async def retrieve_passages(knowledge: KnowledgeBase, turn: KnowledgeTurn, **search: Any) -> KnowledgeChatEvent:
    """Retrieve (and rerank) the passages; the ``citations`` event the answer will refer to."""
    turn.passages = await knowledge.retrieve(turn.space, turn.question, **search)
    turn.citations = citations_for(turn.passages)
    return KnowledgeChatEvent("citations", citations=turn.citations)


async def answer_passages(
    knowledge: KnowledgeBase, llm: LLMClient, turn: KnowledgeTurn, params: SamplingParams | None = None
) -> AsyncIterator[KnowledgeChatEvent]:
    """The answer from the numbered passages, streamed as ``delta`` events (no passages: say so)."""
    if not turn.passages:
        turn.text, turn.finish_reason, turn.usage = NOTHING_FOUND.format(space=turn.space), "stop", Usage()
        yield KnowledgeChatEvent("delta", text=turn.text)
        return
    messages = [
        Message("system", SYSTEM_PROMPT),
        *turn.history,
        Message("user", build_prompt(turn.question, turn.passages, knowledge.settings.max_context_chars)),
    ]
    sampling = params or SamplingParams(max_tokens=256, temperature=0.2)
    request = ModelRequest(model=turn.model, messages=messages, params=sampling)
    parts: list[str] = []
    async for chunk in llm.stream(request):
        if chunk.text:
            parts.append(chunk.text)
            yield KnowledgeChatEvent("delta", text=chunk.text)
        if chunk.finish_reason is not None:
            turn.finish_reason, turn.usage = chunk.finish_reason, chunk.usage
    turn.text = "".join(parts).strip()


def cite(turn: KnowledgeTurn) -> KnowledgeChatEvent:
    """The ``done`` event: the answer, the numbers it cited, and each citation marked ``cited``."""
    if not turn.passages:
        return KnowledgeChatEvent(
            "done", text=turn.text, citations=turn.citations, finish_reason=turn.finish_reason, usage=turn.usage
        )
    cited = cited_numbers(turn.text, len(turn.citations))
    for c in turn.citations:
        c.cited = c.number in cited
    return KnowledgeChatEvent(
        "done",
        text=turn.text,
        citations=turn.citations,
        cited=cited,
        finish_reason=turn.finish_reason,
        usage=turn.usage,
    )


async def knowledge_chat(
    knowledge: KnowledgeBase,
    llm: LLMClient,
    space: str,
    question: str,
    *,
    model: str | None = None,
    history: list[Message] | None = None,
    k: int | None = None,
    mode: str = "hybrid",
    documents: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    rerank: str | bool | None = None,
    params: SamplingParams | None = None,
) -> AsyncIterator[KnowledgeChatEvent]:
    """Answer ``question`` from ``space`` with ``model`` (default: the configured chat model), streaming."""
    turn = KnowledgeTurn(space, question, model or knowledge.settings.chat_model, list(history or []))
    yield await retrieve_passages(
        knowledge, turn, k=k, mode=mode, documents=documents, metadata=metadata, rerank=rerank
    )
    async for event in answer_passages(knowledge, llm, turn, params):
        yield event
    yield cite(turn)


async def answer_question(
    knowledge: KnowledgeBase, llm: LLMClient, space: str, question: str, **kw: Any
) -> KnowledgeAnswer:
    """``knowledge_chat`` gathered into one answer."""
    async for event in knowledge_chat(knowledge, llm, space, question, **kw):
        if event.type == "done":
            return KnowledgeAnswer(event.text, event.citations, event.cited, event.finish_reason, event.usage)
    raise RuntimeError("knowledge chat ended without an answer")
