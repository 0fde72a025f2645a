"""Knowledge retrieval as an AWEL operator, ``knowledge_retrieve``, registered like the built-ins.

A flow names a space; the operator finds the knowledge base either passed to it (Python flows) or as
the vector store named ``knowledge`` in the flow's resources, which the server registers when it
runs a knowledge base (``KnowledgeVectorStore``). A chat turn gets the passages as its ``context``;
any other input (a string, a request with a ``question``/``query`` field) gives ``Retrieved``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel

from datapilot.awel import (
    BaseOperator,
    CallContext,
    ChatState,
    Document,
    FlowResources,
    Requirement,
    Retrieved,
    register_operator,
)
from datapilot.core.errors import ConfigError, InvalidRequestError
from datapilot.core.events import as_event
from datapilot.core.retrieval import Hit
from datapilot.rag._chat import KnowledgeTurn, answer_passages, cite, retrieve_passages
from datapilot.rag._knowledge import _SCOPE, KnowledgeBase

KNOWLEDGE_STORE = "knowledge"
_TEXT_KEYS = ("question", "query", "user_input", "input", "text", "prompt", "content")


class KnowledgeVectorStore:
    """A knowledge base seen as an AWEL vector store: flows find it by name, and plain
    ``vector_search`` nodes search every space's vectors with it (read-only)."""

    def __init__(self, knowledge: KnowledgeBase) -> None:
        self.knowledge = knowledge

    def add(self, vectors: np.ndarray, payloads: list[Any], ids: list[str] | None = None) -> list[str]:
        raise InvalidRequestError("the knowledge store is read-only in flows: add documents with the knowledge API")

    def search(self, vector: np.ndarray, k: int, filter: Callable[[Any], bool] | None = None) -> list[Hit]:
        kb = self.knowledge
        found: list[tuple[float, int]] = []
        for space in list(kb._spaces):
            ids, scores = kb._vectors.search(_SCOPE + space, np.asarray(vector, dtype=np.float32), k)
            found.extend(zip(scores, ids, strict=True))
        found.sort(key=lambda p: -p[0])
        rows = kb.store.chunks_by_id([i for _, i in found[: k * 2]])
        hits: list[Hit] = []
        for score, chunk_id in found:
            row = rows.get(chunk_id)
            if row is None:
                continue
            payload = {"text": row.text, "space": row.space, "document_id": row.document_id, "chunk_id": row.id,
                       "page": row.page, "section": row.section}  # fmt: skip
            if filter is None or filter(payload):
                hits.append(Hit(str(chunk_id), float(score), payload))
            if len(hits) >= k:
                break
        return hits

    def delete(self, ids: list[str]) -> int:
        return 0

    def __len__(self) -> int:
        return sum(len(state.chunk_doc) for state in self.knowledge._spaces.values())


def _question(value: Any, node: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, ChatState):
        return value.question
    data = value.model_dump() if isinstance(value, BaseModel) else value
    if isinstance(data, dict):
        for key in _TEXT_KEYS:
            if isinstance(data.get(key), str):
                return str(data[key])
    raise InvalidRequestError(f"node {node!r} needs a question: a string or a field {', '.join(_TEXT_KEYS)}")


@register_operator("knowledge_retrieve", "knowledge")
class KnowledgeRetrieveOperator(BaseOperator):
    """Retrieves the ``k`` best passages of a knowledge ``space`` (hybrid by default) for the input."""

    def __init__(
        self,
        space: str,
        k: int = 4,
        mode: str = "hybrid",
        *,
        metadata: dict[str, Any] | None = None,
        rerank: str | bool | None = None,
        knowledge: KnowledgeBase | None = None,
        **kw: Any,
    ) -> None:
        self.space, self.k, self.mode, self.metadata, self.rerank = space, k, mode, metadata, rerank
        self.knowledge = knowledge
        super().__init__(**kw)

    node_name = "knowledge_retrieve"
    produces = Retrieved | ChatState

    def requirements(self) -> list[Requirement]:
        return [] if self.knowledge is not None else [Requirement(self.name, "vector_store", KNOWLEDGE_STORE)]

    def _knowledge(self, ctx: CallContext) -> KnowledgeBase:
        if self.knowledge is not None:
            return self.knowledge
        resources = ctx.resources
        if not isinstance(resources, FlowResources):
            raise ConfigError(f"node {self.name!r} needs a knowledge base: pass knowledge=... or bind FlowResources")
        store = resources.store("vector_store", KNOWLEDGE_STORE, self.name)
        if not isinstance(store, KnowledgeVectorStore):
            raise ConfigError(f"node {self.name!r}: the vector store {KNOWLEDGE_STORE!r} is not a knowledge base")
        return store.knowledge

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        value = inputs[0]
        question = _question(value, self.name)
        passages = await self._knowledge(ctx).retrieve(
            self.space, question, k=self.k, mode=self.mode, metadata=self.metadata, rerank=self.rerank
        )
        if isinstance(value, ChatState):
            return dataclasses.replace(value, context=[p.chunk.text for p in passages])
        docs = [
            Document(p.chunk.text, p.score, {"source": p.source, "document_id": p.chunk.document_id,
                     "chunk_id": p.chunk.id, "page": p.chunk.page, "section": p.chunk.section, "number": n})
            for n, p in enumerate(passages, 1)
        ]  # fmt: skip
        return Retrieved(question, docs, value)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"space": self.space, "k": self.k, "mode": self.mode}
        if self.metadata:
            out["metadata"] = self.metadata
        if self.rerank is not None:
            out["rerank"] = self.rerank
        return out


# --- the knowledge chat scene: rag_retrieve -> rag_answer -> rag_cite -----------------------------------


def _knowledge_of(ctx: CallContext, node: str) -> KnowledgeBase:
    found = getattr(ctx.resources, "knowledge", None)
    if not isinstance(found, KnowledgeBase):
        raise InvalidRequestError("knowledge is not available on this server", param="scene")
    return found


@register_operator("rag_retrieve")
class RetrieveOperator(BaseOperator):
    """A request (``question``, ``space``, ``model``, ``history``) -> a ``KnowledgeTurn`` with the space's
    passages: searched (``mode``: hybrid, vector or keyword), then reranked (``rerank``: a reranker's
    name, ``false`` for none, ``null`` for the space's default); the ``citations`` event first."""

    def __init__(self, k: int | None = None, mode: str = "hybrid", rerank: str | bool | None = None, **kw: Any) -> None:
        self.k, self.mode, self.rerank = k, mode, rerank
        super().__init__(**kw)

    node_name = "retrieve"
    produces = KnowledgeTurn

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request = inputs[0]
        knowledge = _knowledge_of(ctx, self.name)
        space = getattr(request, "space", None)
        if not space:
            raise InvalidRequestError("scene 'knowledge' needs a space: send \"space\": NAME", param="space")
        model = getattr(request, "model", None) or knowledge.settings.chat_model
        turn = KnowledgeTurn(space, str(request.question), model, list(getattr(request, "history", None) or []))
        event = await retrieve_passages(knowledge, turn, k=self.k, mode=self.mode, rerank=self.rerank)
        ctx.emit(as_event(event.to_dict()))
        return turn

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "mode": self.mode, "rerank": self.rerank}


@register_operator("rag_answer")
class AnswerOperator(BaseOperator):
    """The answer from the numbered passages, streamed (``delta`` events), through the flow's model client."""

    node_name = "answer"
    accepts = (KnowledgeTurn,)
    produces = KnowledgeTurn

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        turn: KnowledgeTurn = inputs[0]
        knowledge = _knowledge_of(ctx, self.name)
        llm = getattr(ctx.resources, "llm", None)
        if llm is None:
            raise ConfigError(f"node {self.name!r} needs a model client (resources.llm)")
        async for event in answer_passages(knowledge, llm, turn):
            ctx.emit(as_event(event.to_dict()))
        return turn


@register_operator("rag_cite")
class CiteOperator(BaseOperator):
    """The ``done`` event: the answer, the passages it cited (each citation marked ``cited``)."""

    node_name = "cite"
    accepts = (KnowledgeTurn,)
    produces = dict[str, Any]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        turn: KnowledgeTurn = inputs[0]
        done = cite(turn).to_dict()
        ctx.emit(as_event(done))
        return done
