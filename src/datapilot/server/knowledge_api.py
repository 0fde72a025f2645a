"""Knowledge over HTTP, under ``/api/knowledge``: spaces, document uploads with ingestion statuses,
chunks, deletion, retrieval and the knowledge chat (answer streamed as SSE, with citations).

| method and path | what |
|---|---|
| ``GET/POST /spaces``, ``GET/DELETE /spaces/{space}`` | list, create, show, delete spaces |
| ``POST /spaces/{space}/documents`` | upload files (multipart ``files``; optional ``metadata``, ``chunking`` JSON) |
| ``POST /spaces/{space}/documents/text`` | add text as a document (JSON) |
| ``GET /spaces/{space}/documents[/{id}]`` | documents with their status: queued, parsing, embedding, done, failed |
| ``GET /spaces/{space}/documents/{id}/chunks`` | a document's chunks with page, section and offsets |
| ``DELETE /spaces/{space}/documents/{id}`` | remove a document from the store and every index |
| ``POST /spaces/{space}/query`` | retrieval only: hybrid, dense or keyword, filters, rerank |
| ``POST /spaces/{space}/chat`` | the knowledge chat: SSE events ``citations``, ``delta``..., ``done``; or one JSON |

Uploads answer 202 at once: ingestion runs in the background, and its status is polled.

Tenants: thin routes over ``KnowledgeService``, whose every operation on a space checks it first (404
for another tenant's space, exactly as for a missing one; 403 outside the key's scopes).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datapilot.apps.services import ChatQuestion
from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import Message, SamplingParams
from datapilot.rag import ChunkingConfig
from datapilot.server.deps import (
    CLIENT_CLOSED,
    ClientDisconnected,
    access,
    knowledge_service,
    require_api_key,
    until_disconnect,
)
from datapilot.server.sse import SSE_RESPONSES, sse_response


class CreateSpaceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=2000)
    chunking: ChunkingConfig | None = None


class AddTextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=500, description="the document's name; its extension picks the loader")
    text: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    chunking: ChunkingConfig | None = None


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=20_000)
    k: int | None = Field(None, ge=1, le=100)
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    documents: list[str] | None = None
    metadata: dict[str, Any] | None = None
    rerank: str | bool | None = None


class ChatMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ChatRequest(QueryRequest):
    query: str = Field("", max_length=20_000)
    question: str = Field("", max_length=20_000)
    model: str | None = None
    stream: bool = True
    history: list[ChatMessage] = Field(default_factory=list)
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(256, ge=1, le=8192)

    @property
    def text(self) -> str:
        return self.question or self.query

    def to_question(self) -> ChatQuestion:
        return ChatQuestion(
            self.text,
            model=self.model,
            history=[Message(m.role, m.content) for m in self.history],
            k=self.k,
            mode=self.mode,
            documents=self.documents,
            metadata=self.metadata,
            rerank=self.rerank,
            params=SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature),
        )


def _json_field(raw: str | None, name: str) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"form field {name!r} is not valid JSON: {exc}", param=name) from None


def build_knowledge_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/spaces")
    async def list_spaces(request: Request) -> dict[str, Any]:
        return {"data": await knowledge_service(request).list_spaces()}

    @router.post("/spaces", status_code=201)
    async def create_space(body: CreateSpaceRequest, request: Request) -> dict[str, Any]:
        return await knowledge_service(request).create_space(body.name, body.description, body.chunking)

    @router.get("/spaces/{space}")
    async def get_space(space: str, request: Request) -> dict[str, Any]:
        return await knowledge_service(request).space(space)

    @router.delete("/spaces/{space}")
    async def delete_space(space: str, request: Request) -> dict[str, Any]:
        await knowledge_service(request).delete_space(space)
        return {"name": space, "deleted": True}

    @router.post("/spaces/{space}/documents", status_code=202, response_model=None)
    async def upload(
        space: str,
        request: Request,
        files: list[UploadFile] = File(..., description="one or more documents"),
        metadata: str | None = Form(None, description="JSON object stored with each document"),
        chunking: str | None = Form(None, description="JSON chunking options for these documents"),
    ) -> dict[str, Any]:
        meta = _json_field(metadata, "metadata")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidRequestError("form field 'metadata' must be a JSON object", param="metadata")
        try:
            config = ChunkingConfig.model_validate(_json_field(chunking, "chunking")) if chunking else None
        except ValidationError as exc:
            raise InvalidRequestError(f"invalid chunking options: {exc.errors()[0]['msg']}", param="chunking") from None
        return await knowledge_service(request).add_files(space, files, metadata=meta, chunking=config)

    @router.post("/spaces/{space}/documents/text", status_code=202)
    async def add_text(space: str, body: AddTextRequest, request: Request) -> dict[str, Any]:
        svc = knowledge_service(request)
        return await svc.add_text(space, body.name, body.text, metadata=body.metadata, chunking=body.chunking)

    @router.get("/spaces/{space}/documents")
    async def list_documents(space: str, request: Request) -> dict[str, Any]:
        return {"data": await knowledge_service(request).documents(space)}

    @router.get("/spaces/{space}/documents/{doc_id}")
    async def get_document(space: str, doc_id: str, request: Request) -> dict[str, Any]:
        return await knowledge_service(request).document(space, doc_id)

    @router.get("/spaces/{space}/documents/{doc_id}/chunks")
    async def list_chunks(
        space: str,
        doc_id: str,
        request: Request,
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        return {"data": await knowledge_service(request).chunks(space, doc_id, offset, limit)}

    @router.delete("/spaces/{space}/documents/{doc_id}")
    async def delete_document(space: str, doc_id: str, request: Request) -> dict[str, Any]:
        removed = await knowledge_service(request).delete_document(space, doc_id)
        return {"id": doc_id, "deleted": True, "chunks": removed}

    @router.post("/spaces/{space}/query", openapi_extra=access("use"))
    async def query(space: str, body: QueryRequest, request: Request) -> dict[str, Any]:
        return await knowledge_service(request).retrieve(
            space, body.query, k=body.k, mode=body.mode, documents=body.documents, metadata=body.metadata,
            rerank=body.rerank,
        )  # fmt: skip

    @router.post("/spaces/{space}/chat", response_model=None, openapi_extra=access("use"), responses=SSE_RESPONSES)
    async def chat(space: str, body: ChatRequest, request: Request) -> Response | dict[str, Any]:
        """The knowledge chat: ``citations``, ``delta``..., ``done`` as SSE, or the answer as one object."""
        svc = knowledge_service(request)
        if not body.stream:
            try:
                return await until_disconnect(request, svc.answer(space, body.to_question()))
            except ClientDisconnected:
                return Response(status_code=CLIENT_CLOSED)
        events = svc.chat(space, body.to_question())
        first = await anext(events)  # retrieval errors (no such space...) answer with their HTTP status
        return sse_response(request, events, first=first)

    return router
