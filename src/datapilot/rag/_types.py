"""The values knowledge code passes around: spaces, documents, chunks, retrieved passages, citations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from datapilot.core.types import Usage


class IngestStatus(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (IngestStatus.DONE, IngestStatus.FAILED)


@dataclass(slots=True)
class Segment:
    """A span of a loaded document's text that shares one page and one section."""

    start: int
    end: int
    page: int | None = None
    section: str | None = None


@dataclass(slots=True)
class LoadedDocument:
    source: str
    kind: str
    text: str
    segments: list[Segment]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ChunkDraft:
    """A chunk before it is stored: ``start``/``end`` are character offsets into the document's text."""

    text: str
    start: int
    end: int
    page: int | None = None
    section: str | None = None

    def index_text(self) -> str:
        """What is embedded and keyword-indexed: the section path gives a passage its context."""
        return f"{self.section}\n{self.text}" if self.section else self.text


@dataclass(slots=True)
class SpaceInfo:
    name: str
    description: str
    chunking: dict[str, Any]
    created: float
    documents: int = 0
    chunks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class DocumentInfo:
    id: str
    space: str
    source: str
    kind: str
    status: IngestStatus
    error: str | None
    chunks: int
    chunks_done: int
    bytes: int
    content_hash: str
    metadata: dict[str, Any]
    created: float
    updated: float
    unchanged: bool = False  # set on the answer to an add that found the same content already stored

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out


@dataclass(slots=True)
class ChunkInfo:
    id: int
    document_id: str
    space: str
    seq: int
    text: str
    start: int
    end: int
    page: int | None
    section: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Passage:
    """A retrieved chunk with its fused score and where each retriever ranked it (1-based)."""

    chunk: ChunkInfo
    source: str
    score: float
    dense_rank: int | None = None
    keyword_rank: int | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.chunk.to_dict(),
            "source": self.source,
            "score": self.score,
            "dense_rank": self.dense_rank,
            "keyword_rank": self.keyword_rank,
            "rerank_score": self.rerank_score,
        }


@dataclass(slots=True)
class Citation:
    """A numbered passage given to the model; ``cited`` when the answer refers to its number."""

    number: int
    document_id: str
    source: str
    page: int | None
    section: str | None
    text: str
    chunk_id: int
    score: float
    cited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class KnowledgeChatEvent:
    """One event of a knowledge chat: ``citations`` (first), ``delta`` (answer text), ``done`` (last)."""

    type: str
    text: str = ""
    citations: list[Citation] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "delta":
            out["text"] = self.text
        if self.type == "citations":
            out["citations"] = [c.to_dict() for c in self.citations]
        if self.type == "done":
            out.update(
                answer=self.text,
                cited=self.cited,
                citations=[c.to_dict() for c in self.citations],
                finish_reason=self.finish_reason,
                usage=self.usage.to_dict() if self.usage else None,
            )
        return out


@dataclass(slots=True)
class KnowledgeAnswer:
    answer: str
    citations: list[Citation]
    cited: list[int]
    finish_reason: str | None = None
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "citations": [c.to_dict() for c in self.citations],
            "cited": self.cited,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict() if self.usage else None,
        }
