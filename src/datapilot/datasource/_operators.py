"""The data sources' AWEL operators: ``datasource_connect``, ``datasource_schema`` and ``sql``.

They reach databases only through the flow's ``DataSources`` (``ctx.resources.sources``): every
query is held to the read-only guard, runs on a read-only connection, with a row limit and a
timeout. Flows name sources; they never open a file or a URL themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from datapilot.awel import SKIPPED, BaseOperator, CallContext, Requirement, register_operator
from datapilot.core.errors import ConfigError, DataPilotError, InvalidRequestError
from datapilot.core.events import DoneEvent, error_event
from datapilot.datasource._guard import check_read_only
from datapilot.datasource._registry import DataSources
from datapilot.datasource._types import Connector, QueryResult, TableInfo


class SourcesEnv(Protocol):
    """What the operators need from the flow's resources."""

    sources: DataSources

    @property
    def default_source(self) -> str: ...


@dataclass(slots=True)
class Connection:
    """A request with the data source it is about, opened: what a scene's later operators work on."""

    request: Any  # the request that named the source (a scene request: question, model, style...)
    source: str
    connector: Connector
    notes: dict[str, Any] = field(default_factory=dict)  # what a scene adds to the final answer

    @property
    def question(self) -> str:
        return str(getattr(self.request, "question", ""))


def sources_env(ctx: CallContext, node: str) -> SourcesEnv:
    env = ctx.resources
    if env is None or not isinstance(getattr(env, "sources", None), DataSources):
        raise ConfigError(f"node {node!r} needs data sources: run the flow where they are configured (a server)")
    found: SourcesEnv = env
    return found


@register_operator("datasource_connect")
class ConnectOperator(BaseOperator):
    """A request (anything with ``datasource``: a name, or ``None`` for the default) -> its ``Connection``.

    ``answer_errors``: a source that cannot be opened ends the call with an ``error`` and a ``done``
    event holding the error (a chat turn answered "that did not work"), instead of failing the call.
    """

    def __init__(self, answer_errors: bool = False, **kw: Any) -> None:
        self.answer_errors = answer_errors
        super().__init__(**kw)

    node_name = "connect"
    produces = Connection

    def requirements(self) -> list[Requirement]:
        return [Requirement(self.name, "datasource", "*")]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request = inputs[0]
        env = sources_env(ctx, self.name)
        source = getattr(request, "datasource", None) or env.default_source
        try:
            connector = await env.sources.connector(source)
        except DataPilotError as exc:
            if not self.answer_errors:
                raise
            body: dict[str, Any] = exc.to_dict()["error"]  # type: ignore[assignment]
            ctx.emit(error_event(body))
            ctx.emit(DoneEvent(answer={"question": getattr(request, "question", ""), "error": body}))
            return SKIPPED
        return Connection(request, source, connector)

    def params(self) -> dict[str, Any]:
        return {"answer_errors": self.answer_errors}


@register_operator("datasource_schema")
class SchemaOperator(BaseOperator):
    """A ``Connection`` -> the tables of its source (introspected once per connector)."""

    node_name = "schema"
    accepts = (Connection,)
    produces = list[TableInfo]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        conn: Connection = inputs[0]
        return await conn.connector.schema()


@register_operator("sql", "datasource_run")
class SQLOperator(BaseOperator):
    """Runs one read-only query (a string, or a dict with ``sql``) on the data source ``datasource``:
    the guard first, then a read-only connection with ``limit`` rows and ``timeout_s``."""

    def __init__(self, datasource: str, limit: int = 200, timeout_s: float = 5.0, **kw: Any) -> None:
        self.datasource, self.limit, self.timeout_s = datasource, limit, timeout_s
        super().__init__(**kw)

    node_name = "sql"
    accepts = (str | dict[str, Any],)
    produces = QueryResult

    def requirements(self) -> list[Requirement]:
        return [Requirement(self.name, "datasource", self.datasource)]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        value = inputs[0]
        sql = value.get("sql") if isinstance(value, dict) else value
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidRequestError(f"node {self.name!r} needs an SQL string")
        env = sources_env(ctx, self.name)
        connector = await env.sources.connector(self.datasource)
        check_read_only(sql, connector.dialect)
        return await connector.run(sql, self.limit, self.timeout_s)

    def params(self) -> dict[str, Any]:
        return {"datasource": self.datasource, "limit": self.limit, "timeout_s": self.timeout_s}
