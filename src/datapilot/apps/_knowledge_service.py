"""The knowledge base a server holds: document uploads, retrieval and the knowledge chat.

The chat streams typed events (``datapilot.core.events``): ``citations`` first, ``delta``... as the
model writes, ``done`` last with the whole answer.

Tenants: every operation on a space first goes through ``space`` (the store's ``require_space``): a
space another tenant owns is answered exactly as a missing one (404), one outside the key's scopes is a
403. Spaces are created owned by the caller's tenant; the listing shows its tenant's (an admin: all).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from datapilot.core.client import LLMClient
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.core.events import Event, as_event
from datapilot.core.tenancy import can_see
from datapilot.core.types import Message, SamplingParams
from datapilot.rag import (
    KNOWLEDGE_STORE,
    ChunkingConfig,
    KnowledgeBase,
    KnowledgeChatEvent,
    KnowledgeSettings,
    KnowledgeVectorStore,
    knowledge_chat,
    ray_shippable,
)

if TYPE_CHECKING:
    from datapilot.awel import DAGManager
    from datapilot.core.retrieval import Embedder
    from datapilot.models.service import ModelService

log = logging.getLogger("datapilot.knowledge")


class Upload(Protocol):
    """A file being uploaded (Starlette's ``UploadFile`` is one): read once, then closed."""

    filename: str | None

    async def read(self) -> bytes: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class ChatQuestion:
    """A knowledge chat request: the question, the conversation so far and the retrieval options."""

    question: str
    model: str | None = None
    history: list[Message] = field(default_factory=list)
    k: int | None = None
    mode: str = "hybrid"
    documents: list[str] | None = None
    metadata: dict[str, Any] | None = None
    rerank: str | bool | None = None
    params: SamplingParams | None = None


@dataclass
class KnowledgeService:
    """The knowledge base a server holds; opened at start-up, closed at shutdown."""

    knowledge: KnowledgeBase
    llm: ModelService
    _warm: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, llm: ModelService, *, embedder: Embedder | None = None
    ) -> KnowledgeService:
        """``embedder``: one shared with the server's other parts (then the knowledge base does not
        close it); by default the one ``knowledge.embedder`` configures."""
        knowledge = KnowledgeSettings.from_settings(settings)
        # On the Ray runtime, documents are parsed and embedded by Ray tasks on the cluster, when the
        # embedder can be built there (each worker builds its own; queries use this process's).
        on_ray = settings.runtime == "ray" and ray_shippable(knowledge.embedder)
        if settings.runtime == "ray" and not on_ray:
            log.warning(
                "knowledge: documents are ingested in the API server, not on Ray: the %r embedder without "
                "base_url embeds with this process's models, which Ray workers do not have",
                knowledge.embedder.kind,
            )
        kb = KnowledgeBase(
            knowledge,
            settings.home,
            embedder=None if on_ray else embedder,
            rerank_client=llm,
            local_client=llm,
            ray=on_ray,
            ray_address=settings.ray.address,
            ray_namespace=settings.ray.namespace,
            ray_task_cpus=settings.ray.task_num_cpus,
        )
        return cls(kb, llm)

    def attach(self, flows: DAGManager | None) -> None:
        """Let flows retrieve from the knowledge base (the ``knowledge_retrieve`` operator)."""
        if flows is not None:
            flows.resources.vector_stores[KNOWLEDGE_STORE] = KnowledgeVectorStore(self.knowledge)

    async def start(self) -> None:
        await self.knowledge.open()
        load = getattr(self.knowledge.embedder, "load", None)
        if load is not None:  # warm the embedder in the background: the first query is then fast too
            self._warm = asyncio.create_task(load())

    async def close(self) -> None:
        if self._warm is not None and not self._warm.done():
            self._warm.cancel()
        await self.knowledge.close()

    # spaces ---------------------------------------------------------------------------------------------

    async def space(self, name: str) -> dict[str, Any]:
        """Space ``name`` for the caller: the one lookup every operation below starts with (404 for a
        space it may not see, exactly as for a missing one; 403 outside its key's scopes)."""
        return (await self.knowledge.space(name)).to_dict()

    async def list_spaces(self) -> list[dict[str, Any]]:
        """The caller's tenant's spaces (an admin's: every tenant's), each with its ``owner``."""
        owners = await asyncio.to_thread(self.knowledge.store.owners)
        spaces = await self.knowledge.spaces()
        return [
            s.to_dict() | {"owner": owners[s.name], "ingestion": self.knowledge.ingestion}
            for s in spaces
            if s.name in owners and can_see(owners[s.name])
        ]

    async def create_space(
        self, name: str, description: str = "", chunking: ChunkingConfig | None = None
    ) -> dict[str, Any]:
        """A new space owned by the caller's tenant (a name another tenant holds: 409)."""
        return (await self.knowledge.create_space(name, description, chunking)).to_dict()

    async def delete_space(self, name: str) -> None:
        await self.space(name)
        await self.knowledge.delete_space(name)

    # documents ------------------------------------------------------------------------------------------

    async def add_text(
        self, space: str, name: str, text: str, *, metadata: dict[str, Any] | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        await self.space(space)
        doc = await self.knowledge.add_text(space, name, text, metadata=metadata, chunking=chunking)
        return doc.to_dict()

    async def documents(self, space: str) -> list[dict[str, Any]]:
        await self.space(space)
        return [d.to_dict() for d in await self.knowledge.documents(space)]

    async def document(self, space: str, doc_id: str) -> dict[str, Any]:
        await self.space(space)
        return (await self.knowledge.document(space, doc_id)).to_dict()

    async def chunks(self, space: str, doc_id: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        await self.space(space)
        return [c.to_dict() for c in await self.knowledge.chunks(space, doc_id, offset, limit)]

    async def delete_document(self, space: str, doc_id: str) -> int:
        """Remove a document; answers the number of chunks removed."""
        await self.space(space)
        return await self.knowledge.delete_document(space, doc_id)

    async def add_files(
        self,
        space: str,
        files: Sequence[Upload],
        *,
        metadata: dict[str, Any] | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> dict[str, Any]:
        """Queue each file for ingestion: ``{"data": [documents], "errors": [{file, error}]}``. A single
        file that is refused raises its error; among several, each refusal is listed and the rest go on."""
        try:
            await self.space(space)
        except DataPilotError:
            for upload in files:
                await upload.close()
            raise
        docs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for upload in files:
            name = upload.filename or "upload.txt"
            try:
                data = await upload.read()
                doc = await self.knowledge.add_bytes(space, name, data, metadata=metadata, chunking=chunking)
            except DataPilotError as exc:
                if len(files) == 1:
                    raise
                errors.append({"file": name, **exc.to_dict()})
                continue
            finally:
                await upload.close()
            docs.append(doc.to_dict())
        return {"data": docs, "errors": errors}

    async def retrieve(self, space: str, query: str, **search: Any) -> dict[str, Any]:
        """Retrieval only (``search``: ``KnowledgeBase.retrieve``'s options): ``{"data": [passages],
        "latency_ms": ...}``."""
        await self.space(space)
        started = time.perf_counter()
        passages = await self.knowledge.retrieve(space, query, **search)
        latency = round((time.perf_counter() - started) * 1000, 2)
        return {"data": [p.to_dict() for p in passages], "latency_ms": latency}

    def _chat(self, space: str, ask: ChatQuestion, llm: LLMClient | None) -> AsyncIterator[KnowledgeChatEvent]:
        if not ask.question.strip():
            raise InvalidRequestError("Missing required parameter: 'question'", param="question")
        return knowledge_chat(
            self.knowledge,
            llm or self.llm,
            space,
            ask.question,
            model=ask.model,
            history=ask.history,
            k=ask.k,
            mode=ask.mode,
            documents=ask.documents,
            metadata=ask.metadata,
            rerank=ask.rerank,
            params=ask.params,
        )

    async def chat(self, space: str, ask: ChatQuestion, llm: LLMClient | None = None) -> AsyncIterator[Event]:
        """The answer as typed events. Nothing runs until the first event is asked for; retrieval errors
        (no such space...) are raised then, before any event."""
        events = self._chat(space, ask, llm)  # an empty question is a 400 before the space is looked up
        await self.space(space)
        async for event in events:
            yield as_event(event.to_dict())

    async def answer(self, space: str, ask: ChatQuestion, llm: LLMClient | None = None) -> dict[str, Any]:
        """The whole answer at once: the ``done`` event's fields (answer, cited, citations, usage...)."""
        events = self._chat(space, ask, llm)
        await self.space(space)
        async for event in events:
            if event.type == "done":
                out = event.to_dict()
                out.pop("type")
                return out
        raise DataPilotError("the knowledge chat ended without an answer")
