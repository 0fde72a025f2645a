"""``/api/datasources``: register, list, test, inspect and query data sources; upload files; the
values a question names (``/{name}/values``: each source's value index, built in the background).

Thin: pydantic bodies in, the ``DataService`` from app state does the work. Passwords go in and
never come out: every answer shows ``"password": "***"`` at most.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, SecretStr

from datapilot.core.client import LLMClient
from datapilot.core.config import Settings, trained_sql_models
from datapilot.core.errors import InvalidRequestError, ModelNotFoundError
from datapilot.datasource import DataSourceConfig, DataSources
from datapilot.server.openai_api import require_api_key
from datapilot.server.state import services

if TYPE_CHECKING:
    from datapilot.apps import ChatContext
    from datapilot.text2sql import ExampleStore, Grounding, SchemaLinker, ValueIndex, ValueIndexes


@dataclass
class DataService:
    """The data sources a server holds (opened at start-up), and the embedder for schema linking."""

    settings: Settings
    llm: LLMClient
    sources: DataSources | None = None
    embedder: Any = None
    examples: ExampleStore | None = None
    values: ValueIndexes | None = None
    linkers: dict[str, SchemaLinker] = field(default_factory=dict)  # per source, vectors kept across requests
    _chat_model: str | None = field(default=None, repr=False)

    async def start(self) -> None:
        from datapilot.cache import EmbedderContext, make_embedder
        from datapilot.core.client import EmbeddingClient
        from datapilot.text2sql import ExampleStore, ValueIndexes

        self.sources = DataSources(self.settings.data, self.settings.home)
        local = self.llm if isinstance(self.llm, EmbeddingClient) else None
        # Built now, loaded on first use: only schemas over ``schema_top_k`` tables ever embed.
        self.embedder = make_embedder(self.settings.data.embedder, EmbedderContext(self.settings.home, local))
        # Verified examples live next to the source definitions; their vectors embed on first ``similar``.
        self.examples = ExampleStore(self.sources.store.url, embedder=self.embedder)
        self.values = ValueIndexes()  # built per source in the background, on first use or when added

    async def close(self) -> None:
        if self.values is not None:
            await self.values.close()
        if self.examples is not None:
            self.examples.close()
        if self.sources is not None:
            await self.sources.close()
        close = getattr(self.embedder, "aclose", None)
        if close is not None:
            await close()

    def require(self) -> DataSources:
        if self.sources is None:
            raise InvalidRequestError("data sources are not available on this server")
        return self.sources

    def value_status(self, name: str, *, refresh: bool = False) -> dict[str, Any]:
        """The status of source ``name``'s value index, starting its build the first time it is asked
        for, or anew with ``refresh``. An unknown source is a 404."""
        sources = self.require()
        sources.get(name)
        if self.values is None:
            raise InvalidRequestError("value indexes are not available on this server")
        opener = functools.partial(sources.connector, name)
        return self.values.refresh(name, opener) if refresh else self.values.ensure(name, opener)

    def grounding(self, name: str) -> Grounding:
        """Source ``name``'s grounding for text-to-SQL: its value index once ready (a build starts on
        first use; until it is done questions go without hints) and its verified examples."""
        from datapilot.text2sql import Grounding

        return Grounding(name, values=functools.partial(self.value_index, name), examples=self.examples)

    def value_index(self, name: str) -> ValueIndex | None:
        """Source ``name``'s value index if it is ready, else ``None`` (a build is started; never waits)."""
        self.value_status(name)
        return self.values.get(name) if self.values is not None else None

    def search_values(self, name: str, question: str, k: int) -> dict[str, Any]:
        """The values of source ``name`` that ``question`` mentions; no hits while the index builds."""
        index = self.value_index(name)
        hits = index.lookup(question, k) if index is not None else []
        return {
            "name": name,
            "q": question,
            "state": self.value_status(name)["state"],
            "hits": [h.to_dict() for h in hits],
            "hints": [h.condition(index.dialect) for h in hits] if index is not None else [],
        }

    def index_values_anew(self, name: str) -> dict[str, Any]:
        """Forget source ``name``'s value index (its definition just changed) and build it again."""
        self.forget_values(name)
        self.linkers.pop(name, None)
        return self.value_status(name, refresh=True)

    def forget_values(self, name: str) -> None:
        if self.values is not None:
            self.values.drop(name)

    def sql_model(self, datasource: str | None) -> str | None:
        """The model a data source names for its questions, if any (an unknown source names none)."""
        if self.sources is None:
            return None
        config = self.sources.store.get(datasource or self.settings.data.default_source)
        return config.sql_model if config is not None else None

    def chat_context(self, llm: LLMClient, model: str) -> ChatContext:
        """What the chat scenes and agents use for one request, over this server's sources."""
        from datapilot.apps import ChatContext

        return ChatContext(
            llm,
            model,
            self.require(),
            self.settings.data,
            self.embedder,
            self.linkers,
            self.grounding,
            trained=trained_sql_models(self.settings),
        )

    async def chat_model(self, requested: str | None = None, datasource: str | None = None) -> str:
        """The model for the chat scenes: the request's, the data source's ``sql_model`` (when served),
        ``data.model``, else the first configured chat model."""
        infos = await self.llm.models()
        own = self.sql_model(datasource) if not requested else None
        if own and any(m.name == own and m.status == "ready" for m in infos):
            return own
        name = requested or self.settings.data.model
        if name:
            if not any(m.name == name for m in infos):
                raise ModelNotFoundError(f"The model '{name}' does not exist", param="model")
            return name
        ready = [m.name for m in infos if "chat" in m.capabilities and m.status == "ready"]
        # The first ready chat model in the configuration's order (the served list may be sorted).
        for cfg in self.settings.models:
            if cfg.name in ready:
                return cfg.name
        if ready:
            return ready[0]
        raise ModelNotFoundError("no chat model is ready on this server", param="model")


def data_service(request: Request) -> DataService:
    svc = getattr(services(request), "data", None)
    if svc is None:
        raise InvalidRequestError("data sources are not available on this server")
    return svc


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
        sources = data_service(request).require()
        return {"object": "list", "data": [c.public() for c in sources.list()]}

    @router.post("")
    async def add_source(body: DataSourceCreate, request: Request) -> dict[str, Any]:
        sources = data_service(request).require()
        config = DataSourceConfig.model_validate(
            body.model_dump(exclude={"test", "replace"}) | {"password": body.password}
        )
        added = await sources.add(config, test=body.test, replace=body.replace)
        data_service(request).index_values_anew(added.name)
        return added.public()

    @router.post("/upload")
    async def upload(
        request: Request,
        filename: str = Query(..., description="the file's name; its suffix picks the reader"),
        name: str | None = Query(None, description="data source name [default: from the file name]"),
    ) -> dict[str, Any]:
        """Upload a CSV / TSV / xlsx / Parquet file as the raw request body; it becomes a data source."""
        sources = data_service(request).require()
        data = await request.body()
        if not data:
            raise InvalidRequestError("the request body (the file) is empty", param="file")
        added = await sources.add_upload(filename, data, name)
        data_service(request).index_values_anew(added.name)
        connector = await sources.connector(added.name)
        from datapilot.apps import describe_columns

        tables = await connector.schema()
        return {**added.public(), "tables": {t.name: await describe_columns(connector, t) for t in tables}}

    @router.get("/{name}")
    async def get_source(name: str, request: Request) -> dict[str, Any]:
        return data_service(request).require().get(name).public()

    @router.delete("/{name}")
    async def remove_source(name: str, request: Request) -> dict[str, Any]:
        await data_service(request).require().remove(name)
        svc = data_service(request)
        svc.forget_values(name)
        if svc.examples is not None:  # a new source of the same name must not inherit its examples
            svc.examples.forget_source(name)
        return {"name": name, "deleted": True}

    @router.post("/{name}/test")
    async def test_source(name: str, request: Request) -> dict[str, Any]:
        sources = data_service(request).require()
        started = time.perf_counter()
        connector = await sources.connector(name)
        await connector.run("SELECT 1", limit=1, timeout_s=sources.settings.timeout_s)
        tables = await connector.tables()
        return {
            "name": name,
            "ok": True,
            "tables": len(tables),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    @router.get("/{name}/schema")
    async def schema(name: str, request: Request) -> dict[str, Any]:
        sources = data_service(request).require()
        connector = await sources.connector(name)
        return {"name": name, "dialect": connector.dialect, "tables": [t.to_dict() for t in await connector.schema()]}

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

    @router.post("/{name}/query")
    async def query(name: str, body: QueryBody, request: Request) -> dict[str, Any]:
        """Run one read-only query (refused with 400 unless it is a single SELECT)."""
        sources = data_service(request).require()
        connector = await sources.connector(name)
        limit = min(body.limit or sources.settings.row_limit, sources.settings.row_limit)
        result = await connector.run(body.sql, limit, sources.settings.timeout_s)
        return result.to_dict()

    return router
