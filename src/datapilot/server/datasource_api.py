"""``/api/datasources``: register, list, test, inspect and query data sources; upload files; the
values a question names (``/{name}/values``: each source's value index, built in the background).

Thin: pydantic bodies in, the ``DataService`` from app state does the work. Passwords go in and
never come out: every answer shows ``"password": "***"`` at most.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, SecretStr, ValidationError

from datapilot.datasource import DataSourceConfig
from datapilot.server.deps import access, data_service, require_api_key


class DataSourceCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: str
    kind: str
    url: str | None = None
    path: str | None = None
    files: list[str] = Field(default_factory=list)
    password: SecretStr | None = None
    description: str = ""
    sql_model: str | None = Field(None, description="the model for this source's questions when a request names none")
    test: bool = Field(True, description="connect and run SELECT 1 before registering")
    replace: bool = False


class QueryBody(BaseModel):
    model_config = {"extra": "forbid"}

    sql: str
    limit: int | None = Field(None, ge=1)


def build_datasource_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("")
    async def list_sources(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": data_service(request).list_sources()}

    @router.post("")
    async def add_source(body: DataSourceCreate, request: Request) -> dict[str, Any]:
        try:
            config = DataSourceConfig.model_validate(
                body.model_dump(exclude={"test", "replace"}) | {"password": body.password}
            )
        except ValidationError as exc:  # e.g. an unknown kind: a 400 naming the field, like any bad body
            raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
        return await data_service(request).add_source(config, test=body.test, replace=body.replace)

    @router.post("/upload")
    async def upload(
        request: Request,
        filename: str = Query(..., description="the file's name; its suffix picks the reader"),
        name: str | None = Query(None, description="data source name [default: from the file name]"),
    ) -> dict[str, Any]:
        """Upload a CSV / TSV / xlsx / Parquet file as the raw request body; it becomes a data source."""
        svc = data_service(request)
        return await svc.add_upload(filename, await request.body(), name)

    @router.get("/{name}")
    async def get_source(name: str, request: Request) -> dict[str, Any]:
        return data_service(request).get_source(name)

    @router.delete("/{name}")
    async def remove_source(name: str, request: Request) -> dict[str, Any]:
        await data_service(request).remove_source(name)
        return {"name": name, "deleted": True}

    @router.post("/{name}/test", openapi_extra=access("use"))
    async def test_source(name: str, request: Request) -> dict[str, Any]:
        return await data_service(request).test_source(name)

    @router.get("/{name}/schema")
    async def schema(name: str, request: Request) -> dict[str, Any]:
        return await data_service(request).schema(name)

    @router.get("/{name}/values")
    async def value_status(name: str, request: Request) -> dict[str, Any]:
        """The value index's status (building, ready, failed); the first call starts its build."""
        return data_service(request).value_status(name)

    @router.post("/{name}/values/refresh")
    async def refresh_values(name: str, request: Request) -> dict[str, Any]:
        """Rebuild the value index in the background (the old one serves meanwhile); returns the status."""
        return data_service(request).value_status(name, refresh=True)

    @router.get("/{name}/values/search")
    async def search_values(
        name: str,
        request: Request,
        q: str = Query(..., min_length=1, max_length=2000, description="a question"),
        k: int = Query(5, ge=1, le=100, description="hits at most"),
    ) -> dict[str, Any]:
        """The stored values the question mentions (none until the index is ready)."""
        return data_service(request).search_values(name, q, k)

    @router.post("/{name}/query", openapi_extra=access("use"))
    async def query(name: str, body: QueryBody, request: Request) -> dict[str, Any]:
        """Run one read-only query (refused with 400 unless it is a single SELECT)."""
        return await data_service(request).query(name, body.sql, body.limit)

    return router
