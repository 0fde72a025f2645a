"""``/api/datasources/{name}/examples`` and ``/feedback``: verified question -> SQL pairs per data source.

Thin: the ``DataService``'s ``ExampleStore`` does the work. A verified pair is checked against its
source (one read-only query that runs) before it is kept; on any error nothing is stored. A thumbs
down is recorded as wrong and never shown to the model.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from datapilot.apps.services import FEEDBACK_MESSAGES
from datapilot.server.deps import data_service, require_api_key


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


def build_examples_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/{name}/examples")
    async def list_examples(
        name: str,
        request: Request,
        verified: bool | None = Query(None, description="true: verified only; false: those rated wrong"),
    ) -> dict[str, Any]:
        return {"object": "list", "data": data_service(request).list_examples(name, verified)}

    @router.post("/{name}/examples")
    async def add_example(name: str, body: ExampleBody, request: Request) -> dict[str, Any]:
        """Add a verified example: it must be one read-only query that runs on the source."""
        return await data_service(request).add_example(name, body.question, body.sql, body.note)

    @router.post("/{name}/examples/import")
    async def import_examples(name: str, body: list[ExampleBody], request: Request) -> dict[str, Any]:
        """Add many verified examples: all of them, or none when one fails its checks."""
        added = await data_service(request).import_examples(name, [item.model_dump() for item in body])
        return {"object": "list", "imported": len(added), "data": added}

    @router.get("/{name}/examples/similar")
    async def similar_examples(
        name: str,
        request: Request,
        q: str = Query(..., min_length=1, description="the question"),
        k: int = Query(3, ge=1, le=50),
    ) -> dict[str, Any]:
        """The verified examples nearest a question, compared with tables, columns and values masked."""
        return {"object": "list", **await data_service(request).similar_examples(name, q, k)}

    @router.delete("/{name}/examples/{example_id}")
    async def remove_example(name: str, example_id: int, request: Request) -> dict[str, Any]:
        data_service(request).remove_example(name, example_id)
        return {"id": example_id, "deleted": True}

    @router.post("/{name}/feedback")
    async def feedback(name: str, body: FeedbackBody, request: Request) -> dict[str, Any]:
        """A rating of an answer's SQL: up keeps it as a verified example (checked first), down as wrong."""
        up = body.rating == "up"
        saved = await data_service(request).rate_answer(name, body.question, body.sql, up, body.note)
        return {"rating": body.rating, "message": FEEDBACK_MESSAGES[body.rating], "example": saved}

    return router
