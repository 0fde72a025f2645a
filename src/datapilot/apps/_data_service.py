"""The data sources a server holds: registration, queries, value indexes, verified examples, and
the context the chat scenes and agents run in.

Passwords go in and never come out: every answer built from a source's definition uses
``DataSourceConfig.public()`` (``"password": "***"`` at most); at rest they are encrypted with the
home's secret key. A source's URL is checked against the ``[security]`` outbound policy when it is
added (400 ``url_not_allowed``, nothing registered) and again before each connection.

Tenants: every method naming a source reaches it through ``DataSources.get`` (directly or by its
``connector``), which answers another tenant's source exactly as a missing one (404) and a source
outside the key's scopes with a 403; listings show the caller's tenant's sources (an admin: all).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datapilot.core.client import LLMClient
from datapilot.core.config import SMOLLM2_CHAT_MODEL, Settings, trained_sql_models
from datapilot.core.errors import InvalidRequestError, ModelNotFoundError, NotFoundError
from datapilot.core.outbound import OutboundPolicy
from datapilot.core.types import ModelInfo
from datapilot.datasource import DataSourceConfig, DataSources

if TYPE_CHECKING:
    from datapilot.apps import ChatContext
    from datapilot.text2sql import ExampleStore, Grounding, SchemaLinker, ValueIndex, ValueIndexes

FEEDBACK_MESSAGES = {"up": "saved as a verified example", "down": "recorded as wrong"}


@dataclass
class DataService:
    """The data sources a server holds (opened at start-up), and the embedder for schema linking.

    ``embedder``: give one to share it with the server's other parts (it is then not closed here);
    without one, ``start`` builds the one ``data.embedder`` configures.
    """

    settings: Settings
    llm: LLMClient
    sources: DataSources | None = None
    embedder: Any = None
    examples: ExampleStore | None = None
    values: ValueIndexes | None = None
    linkers: dict[str, SchemaLinker] = field(default_factory=dict)  # per source, vectors kept across requests
    _chat_model: str | None = field(default=None, repr=False)
    _own_embedder: bool = field(default=False, init=False, repr=False)

    async def start(self) -> None:
        from datapilot.text2sql import ExampleStore, ValueIndexes

        outbound = OutboundPolicy.from_settings(self.settings.security)
        self.sources = DataSources(self.settings.data, self.settings.home, outbound=outbound)
        if self.embedder is None:
            from datapilot.core.client import EmbeddingClient
            from datapilot.retrieval import EmbedderContext, make_embedder

            local = self.llm if isinstance(self.llm, EmbeddingClient) else None
            # Built now, loaded on first use: only schemas over ``schema_top_k`` tables ever embed.
            self.embedder = make_embedder(self.settings.data.embedder, EmbedderContext(self.settings.home, local))
            self._own_embedder = True
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
        if self._own_embedder:
            close = getattr(self.embedder, "aclose", None)
            if close is not None:
                await close()

    def require(self) -> DataSources:
        if self.sources is None:
            raise InvalidRequestError("data sources are not available on this server")
        return self.sources

    # --- sources -------------------------------------------------------------------------------------------

    def list_sources(self) -> list[dict[str, Any]]:
        """The caller's tenant's sources (an admin's: every tenant's), each with its ``owner``."""
        return [c.public() | {"owner": owner} for c, owner in self.require().owned()]

    def get_source(self, name: str) -> dict[str, Any]:
        return self.require().get(name).public()

    async def add_source(self, config: DataSourceConfig, *, test: bool = True, replace: bool = False) -> dict[str, Any]:
        """Register a source (``test``: connect and run ``SELECT 1`` first) and index its values anew."""
        added = await self.require().add(config, test=test, replace=replace)
        self.index_values_anew(added.name)
        return added.public()

    async def add_upload(self, filename: str, data: bytes, name: str | None = None) -> dict[str, Any]:
        """A CSV / TSV / xlsx / Parquet file as a new source, with each table's columns described."""
        from datapilot.apps import describe_columns

        if not data:
            raise InvalidRequestError("the request body (the file) is empty", param="file")
        sources = self.require()
        added = await sources.add_upload(filename, data, name)
        self.index_values_anew(added.name)
        connector = await sources.connector(added.name)
        tables = await connector.schema()
        return {**added.public(), "tables": {t.name: await describe_columns(connector, t) for t in tables}}

    async def remove_source(self, name: str) -> None:
        """Remove a source with its value index and its examples (a new source of the same name must
        not inherit them)."""
        await self.require().remove(name)
        self.forget_values(name)
        self.linkers.pop(name, None)
        if self.examples is not None:
            self.examples.forget_source(name)

    async def test_source(self, name: str) -> dict[str, Any]:
        sources = self.require()
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

    async def schema(self, name: str) -> dict[str, Any]:
        connector = await self.require().connector(name)
        return {"name": name, "dialect": connector.dialect, "tables": [t.to_dict() for t in await connector.schema()]}

    async def query(self, name: str, sql: str, limit: int | None = None) -> dict[str, Any]:
        """Run one read-only query (refused unless it is a single SELECT), at most ``row_limit`` rows."""
        sources = self.require()
        connector = await sources.connector(name)
        rows = min(limit or sources.settings.row_limit, sources.settings.row_limit)
        result = await connector.run(sql, rows, sources.settings.timeout_s)
        return result.to_dict()

    # --- value indexes -------------------------------------------------------------------------------------

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

    # --- verified examples ---------------------------------------------------------------------------------

    def example_store(self) -> tuple[DataSources, ExampleStore]:
        sources = self.require()
        if self.examples is None:
            raise InvalidRequestError("the example store is not available on this server")
        return sources, self.examples

    def list_examples(self, name: str, verified: bool | None = None) -> list[dict[str, Any]]:
        sources, store = self.example_store()
        sources.get(name)
        return [ex.to_dict() for ex in store.list(name, verified=verified)]

    async def add_example(self, name: str, question: str, sql: str, note: str = "") -> dict[str, Any]:
        """Add a verified example: it must be one read-only query that runs on the source."""
        sources, store = self.example_store()
        connector = await sources.connector(name)
        timeout = sources.settings.timeout_s
        added = await store.add(name, question, sql, note=note, connector=connector, timeout_s=timeout)
        return added.to_dict()

    async def import_examples(self, name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add many verified examples: all of them, or none when one fails its checks."""
        sources, store = self.example_store()
        connector = await sources.connector(name)
        added = await store.import_examples(name, items, connector=connector, timeout_s=sources.settings.timeout_s)
        return [ex.to_dict() for ex in added]

    async def similar_examples(self, name: str, question: str, k: int) -> dict[str, Any]:
        """The verified examples nearest a question, compared with tables, columns and values masked."""
        sources, store = self.example_store()
        connector = await sources.connector(name)
        if not store.has_schema(name):
            store.set_schema(name, await connector.schema())
        ranked = await store.ranked(name, question, k)
        return {"masked": store.mask(name, question), "data": [ex.to_dict() | {"score": s} for ex, s in ranked]}

    def remove_example(self, name: str, example_id: int) -> None:
        sources, store = self.example_store()
        sources.get(name)
        if not store.remove(name, example_id):
            raise NotFoundError(
                f"data source {name!r} has no example {example_id}", param="id", code="example_not_found"
            )

    async def rate_answer(self, name: str, question: str, sql: str, up: bool, note: str = "") -> dict[str, Any]:
        """A rating of an answer's SQL: up keeps it as a verified example (checked first), down as wrong."""
        sources, store = self.example_store()
        sources.get(name)
        connector = await sources.connector(name) if up else None  # wrong SQL never runs
        saved = await store.add(
            name, question, sql, verified=up, note=note, connector=connector, timeout_s=sources.settings.timeout_s
        )
        return saved.to_dict()

    # --- chat scenes ---------------------------------------------------------------------------------------

    def sql_model(self, datasource: str | None) -> str | None:
        """The model a data source names for its questions, if any (an unknown source, or one the caller
        may not see, names none: the scene then answers its 404)."""
        if self.sources is None:
            return None
        try:
            config = self.sources.get(datasource or self.settings.data.default_source)
        except NotFoundError:
            return None
        return config.sql_model

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
        """The model for the chat scenes (``choose_chat_model`` over the models served here)."""
        own = self.sql_model(datasource) if not requested else None
        return choose_chat_model(self.settings, requested, own, await self.llm.models())


def choose_chat_model(
    settings: Settings, requested: str | None, own: str | None, served: list[ModelInfo] | None
) -> str:
    """The one rule for the chat scenes' model, in the server and the CLI: the request's, the data
    source's ``sql_model`` (``own``, when served and ready), ``data.model``, then the embedded model
    that measured best at writing SQL and answers (``PREFERRED_CHAT_MODELS``, when configured and, on a
    server, ready), else the first configured chat model (ready, when ``served`` is known; the CLI loads
    the one it picks, so it passes None)."""
    known = {m.name: m for m in served} if served is not None else None
    if own and (
        (known is None and settings.model(own) is not None) or (known and own in known and known[own].status == "ready")
    ):
        return own
    name = requested or settings.data.model
    if name:
        if (known is not None and name not in known) or (known is None and settings.model(name) is None):
            where = "configured" if known is None else "served here"
            raise ModelNotFoundError(f"The model '{name}' does not exist (not {where})", param="model")
        return name
    if known is None:
        for preferred in PREFERRED_CHAT_MODELS:
            cfg = settings.model(preferred)
            if cfg is not None and cfg.enabled:
                return preferred
        for cfg in settings.models:
            caps = cfg.params.get("capabilities", [])
            if cfg.enabled and cfg.backend not in EMBEDDING_BACKENDS and "embedding" not in caps:
                return cfg.name
        raise ModelNotFoundError("no chat model is configured; add one or pass a model", param="model")
    ready = [m.name for m in known.values() if "chat" in m.capabilities and m.status == "ready"]
    for preferred in PREFERRED_CHAT_MODELS:
        if preferred in ready:
            return preferred
    # The first ready chat model in the configuration's order (the served list may be sorted).
    for cfg in settings.models:
        if cfg.name in ready:
            return cfg.name
    if ready:
        return ready[0]
    raise ModelNotFoundError("no chat model is ready on this server", param="model")


EMBEDDING_BACKENDS = frozenset({"sentence_transformers"})
# Between the two embedded chat models, SmolLM2-135M-Instruct measured better at both jobs of the data
# scenes (benchmarks, 2026-12-05): text-to-SQL on the shipped dev set, EX 16/65 against Gemma 3 270M's
# 14/65 (`datapilot eval text2sql -m ...`; the held-out set ties at 6/60), and the one-sentence answers
# from query results, 29/52 stating every value and no other number against 22/52
# (`benchmarks/prose_eval.py`). Plain chat tied (12/24 each).
PREFERRED_CHAT_MODELS: tuple[str, ...] = (SMOLLM2_CHAT_MODEL,)
