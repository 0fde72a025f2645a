"""``/api/datasources/{name}/examples`` and ``/feedback``: verified question -> SQL pairs per data source.

Thin: the ``DataService``'s ``ExampleStore`` does the work. A verified pair is checked against its
source (one read-only query that runs) before it is kept; on any error nothing is stored. A thumbs
down is recorded as wrong and never shown to the model.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from datapilot.core.errors import InvalidRequestError, NotFoundError
from datapilot.datasource import DataSources
from datapilot.server.datasource_api import data_service
from datapilot.server.openai_api import require_api_key
from datapilot.text2sql import ExampleStore


class ExampleBody(BaseModel):
    model_config = {"extra": "forbid"}

    question: str
    sql: str
    note: str = ""


class FeedbackBody(BaseModel):
    model_config = {"extra": "forbid"}

    question: str
    sql: str
    rating: Literal["up", "down"] = Field(description="up: save as a verified example; down: record as wrong")
    note: str = ""


FEEDBACK_MESSAGES = {"up": "saved as a verified example", "down": "recorded as wrong"}


def _store(request: Request) -> tuple[DataSources, ExampleStore]:
    svc = data_service(request)
    sources = svc.require()
    if svc.examples is None:
        raise InvalidRequestError("the example store is not available on this server")
    return sources, svc.examples


def build_examples_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/{name}/examples")
    async def list_examples(
        name: str,
        request: Request,
        verified: bool | None = Query(None, description="true: verified only; false: those rated wrong"),
    ) -> dict[str, Any]:
        sources, store = _store(request)
        sources.get(name)
        return {"object": "list", "data": [ex.to_dict() for ex in store.list(name, verified=verified)]}

    @router.post("/{name}/examples")
    async def add_example(name: str, body: ExampleBody, request: Request) -> dict[str, Any]:
        """Add a verified example: it must be one read-only query that runs on the source."""
        sources, store = _store(request)
        connector = await sources.connector(name)
        added = await store.add(
            name, body.question, body.sql, note=body.note, connector=connector, timeout_s=sources.settings.timeout_s
        )
        return added.to_dict()

    @router.post("/{name}/examples/import")
    async def import_examples(name: str, body: list[ExampleBody], request: Request) -> dict[str, Any]:
        """Add many verified examples: all of them, or none when one fails its checks."""
        sources, store = _store(request)
        connector = await sources.connector(name)
        added = await store.import_examples(
            name, [item.model_dump() for item in body], connector=connector, timeout_s=sources.settings.timeout_s
        )
        return {"object": "list", "imported": len(added), "data": [ex.to_dict() for ex in added]}

    @router.get("/{name}/examples/similar")
    async def similar_examples(
        name: str,
        request: Request,
        q: str = Query(..., min_length=1, description="the question"),
        k: int = Query(3, ge=1, le=50),
    ) -> dict[str, Any]:
        """The verified examples nearest a question, compared with tables, columns and values masked."""
        sources, store = _store(request)
        connector = await sources.connector(name)
        if not store.has_schema(name):
            store.set_schema(name, await connector.schema())
        ranked = await store.ranked(name, q, k)
        return {
            "object": "list",
            "masked": store.mask(name, q),
            "data": [ex.to_dict() | {"score": score} for ex, score in ranked],
        }

    @router.delete("/{name}/examples/{example_id}")
    async def remove_example(name: str, example_id: int, request: Request) -> dict[str, Any]:
        sources, store = _store(request)
        sources.get(name)
        if not store.remove(name, example_id):
            raise NotFoundError(
                f"data source {name!r} has no example {example_id}", param="id", code="example_not_found"
            )
        return {"id": example_id, "deleted": True}

    @router.post("/{name}/feedback")
    async def feedback(name: str, body: FeedbackBody, request: Request) -> dict[str, Any]:
        """A rating of an answer's SQL: up keeps it as a verified example (checked first), down as wrong."""
        sources, store = _store(request)
        sources.get(name)
        connector = await sources.connector(name) if body.rating == "up" else None  # wrong SQL never runs
        saved = await store.add(
            name,
            body.question,
            body.sql,
            verified=body.rating == "up",
            note=body.note,
            connector=connector,
            timeout_s=sources.settings.timeout_s,
        )
        return {"rating": body.rating, "message": FEEDBACK_MESSAGES[body.rating], "example": saved.to_dict()}

    return router
