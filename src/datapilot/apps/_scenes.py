"""The chat scenes' operators, and the environment they run in (``ChatContext``).

Each scene is an AWEL flow (``_flows.py``) of operators: the modules' own (``datasource_connect``,
``text2sql_ground`` ... ``text2sql_vote``, ``rag_retrieve`` ...) and the ones here, which present what
the modules found: the result's table and chart, a short answer streamed by the model, the final
``done`` event. Operators send their events with ``ctx.emit`` (``datapilot.core.events`` models);
``SceneService`` streams them as they come.

Every model call goes through the ``LLMClient`` in the context: in the server, the cache-aware one.
A scene that wants a JSON answer asks for it under a JSON schema (``response_format``) when the model
lists ``json_schema`` in its capabilities, and reads other models' answers with the tolerant parsers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datapilot.apps._charts import choose_chart, vega_lite
from datapilot.awel import SKIPPED, BaseOperator, CallContext, register_operator
from datapilot.core.client import LLMClient
from datapilot.core.config import DataSettings
from datapilot.core.errors import ConfigError, ContextLengthExceededError, DataPilotError, InvalidRequestError
from datapilot.core.events import (
    AnalysisEvent,
    ChartEvent,
    ColumnsEvent,
    DoneEvent,
    SchemaEvent,
    SQLEvent,
    StepEvent,
    TableEvent,
    TextEvent,
    error_event,
)
from datapilot.core.types import Message, ModelRequest, ResponseFormat, SamplingParams
from datapilot.datasource import Connection, Connector, DataSources, QueryResult, TableInfo, jsonable
from datapilot.text2sql import (
    Grounding,
    SchemaLinker,
    SQLTask,
    Text2SQL,
    Text2SQLOptions,
    parse_answer_list,
    transpile,
)
from datapilot.text2sql import (
    chat_messages as sql_chat_messages,
)

if TYPE_CHECKING:
    from datapilot.core.retrieval import Embedder

ANSWER_ROWS = 12  # rows of the result shown to the model when it writes the short answer
FILE_KINDS = ("csv", "excel", "parquet", "files", "duckdb")


@dataclass(slots=True)
class ChatContext:
    """The environment the scene flows run in: a model client, the default model, the data sources,
    the data settings, and what the server keeps per source across requests (schema linkers, value
    indexes and verified examples). It is the flows' ``resources``."""

    llm: LLMClient
    model: str
    sources: DataSources
    settings: DataSettings
    embedder: Embedder | None = None
    # Kept by the server across requests (a linker keeps its schema vectors): one per source.
    linkers: dict[str, SchemaLinker] = field(default_factory=dict)
    # The source's value index and verified examples, when the server keeps them.
    grounding: Callable[[str], Grounding | None] | None = None
    # Models fine-tuned for text-to-SQL (``datapilot train``): prompted as they were trained.
    trained: frozenset[str] = frozenset()
    # Named stores flows may use (``cache``: the semantic cache, as ``FlowResources.store``).
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    knowledge: Any = None  # the knowledge base (scene knowledge; agents' researcher)
    agents: Any = None  # the server's agent service (scene agent): plugins, memory, kept traces

    def linker(self, source: str) -> SchemaLinker:
        if source not in self.linkers:
            self.linkers[source] = SchemaLinker(self.embedder, self.settings.schema_top_k)
        return self.linkers[source]

    def grounded(self, source: str) -> Grounding | None:
        return self.grounding(source) if self.grounding is not None else None

    def options(self, **over: Any) -> Text2SQLOptions:
        return Text2SQLOptions(
            max_corrections=self.settings.max_corrections,
            row_limit=self.settings.row_limit,
            timeout_s=self.settings.timeout_s,
            **over,
        )

    @property
    def default_source(self) -> str:
        return self.settings.default_source

    def model_for(self, requested: str | None) -> str:
        return requested or self.model

    def text2sql(self, connector: Connector, source: str, model: str | None, style: str = "completion") -> Text2SQL:
        """The pipeline for one question over ``source`` (``text2sql_ground`` asks for it)."""
        name = self.model_for(model)
        return Text2SQL(
            self.llm,
            name,
            connector,
            linker=self.linker(source),
            options=self.options(style=style, trained=name in self.trained),
            grounding=self.grounded(source),
        )

    def store(self, kind: str, name: str, node: str) -> Any:
        """A named store for a flow's operator (the ``cache_lookup`` operator's cache...)."""
        found = self.stores.get(kind, {}).get(name)
        if found is None:
            raise ConfigError(f"node {node!r} needs the {kind} {name!r}, which this server does not have")
        return found


@dataclass(slots=True)
class SceneRequest:
    question: str
    datasource: str | None = None
    model: str | None = None
    style: str = "completion"  # text-to-SQL prompt style: completion (base models) or chat (JSON)
    file: str | None = None  # excel: a local file to load (library and CLI use)
    history: list[Message] = field(default_factory=list)
    space: str | None = None  # knowledge and agent: the knowledge space


def chat_env(ctx: CallContext, node: str) -> ChatContext:
    env = ctx.resources
    if not isinstance(env, ChatContext):
        raise ConfigError(f"node {node!r} runs in a chat scene: give the flow a ChatContext as its resources")
    return env


# --- shared pieces ----------------------------------------------------------------------------------------


def chart_payload(result: QueryResult, wish: str | None, title: str) -> dict[str, Any]:
    spec = choose_chart(result, wish, title)
    return {"spec": spec.to_dict(), "vega_lite": vega_lite(spec, result)}


def _result_text(result: QueryResult) -> str:
    rows = result.rows[:ANSWER_ROWS]
    lines = [" | ".join(result.columns)] + [" | ".join(str(jsonable(v)) for v in r) for r in rows]
    more = f"\n({len(result.rows) - len(rows)} more rows)" if len(result.rows) > len(rows) else ""
    return "\n".join(lines) + more


async def stream_text(
    llm: LLMClient,
    model: str,
    messages: list[Message],
    max_tokens: int = 80,
    response_format: ResponseFormat | None = None,
    finish: list[str] | None = None,
) -> AsyncIterator[str]:
    """The answer's text as it streams; ``finish`` (when given) receives how the answer ended."""
    request = ModelRequest(
        model=model,
        messages=messages,
        params=SamplingParams(max_tokens=max_tokens, temperature=0.2),
        response_format=response_format,
    )
    async for chunk in llm.stream(request):
        if chunk.text:
            yield chunk.text
        if chunk.finish_reason is not None and finish is not None:
            finish.append(chunk.finish_reason)


async def model_supports(llm: LLMClient, model: str, capability: str) -> bool:
    """Whether ``model`` lists ``capability`` (``json_schema``, ``tools``...); False when unknown."""
    try:
        infos = await llm.models()
    except DataPilotError:
        return False
    return any(m.name == model and capability in m.capabilities for m in infos)


def summary_of(result: QueryResult) -> str:
    """A plain statement of what came back, independent of the model."""
    if len(result.rows) == 1 and len(result.columns) == 1:
        return f"{result.columns[0]} = {jsonable(result.rows[0][0])}"
    more = " (cut at the row limit)" if result.truncated else ""
    return f"{len(result.rows)} rows, columns: {', '.join(result.columns)}{more}"


# --- data: question -> SQL -> table -> chart -> short answer ------------------------------------------------


@register_operator("scene_request")
class SceneRequestOperator(BaseOperator):
    """The scene's input: the ``SceneRequest`` the call was made with."""

    is_source = True
    max_inputs = 0

    node_name = "request"
    produces = SceneRequest

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        if not isinstance(ctx.data, SceneRequest):
            raise InvalidRequestError("a scene is called with a SceneRequest")
        return ctx.data


@register_operator("scene_present")
class PresentOperator(BaseOperator):
    """The answer's SQL, table and chart (``sql``, ``table``, ``chart`` events); an answer without a
    result ends the scene here with its ``error`` and a ``done`` holding the attempts."""

    node_name = "present"

    accepts = (SQLTask,)
    produces = SQLTask

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        task: SQLTask = inputs[0]
        answer = task.answer
        final = task.notes.setdefault("final", {})
        final.update(
            question=task.question,
            datasource=task.source,
            sql=answer.sql,
            text="",
            # How sure the pipeline is: candidates' agreement, or 1.0 for a verified SQL reused.
            confidence=round(answer.confidence, 4),
            reused=answer.reused.to_dict() if answer.reused else None,
        )
        if answer.sql:
            ctx.emit(SQLEvent(sql=answer.sql))
        if answer.result is None:
            err: dict[str, Any] = (answer.error or InvalidRequestError("no answer")).to_dict()["error"]  # type: ignore[assignment]
            ctx.emit(error_event(err))
            final.update(error=err, attempts=[a.to_dict() for a in answer.attempts])
            ctx.emit(DoneEvent(answer=_with_notes(final, task.notes)))
            return SKIPPED
        result = answer.result
        ctx.emit(TableEvent(**result.to_dict()))
        chart = chart_payload(result, answer.chart, task.question)
        ctx.emit(ChartEvent(**chart))
        final.update(chart=chart)
        return task


def _with_notes(final: dict[str, Any], notes: dict[str, Any]) -> dict[str, Any]:
    return {**final, **{k: v for k, v in notes.items() if k != "final"}}


@register_operator("scene_summarise")
class SummariseOperator(BaseOperator):
    """The short answer in one sentence, written by the model from the result (``text`` events)."""

    node_name = "summarise"

    def __init__(self, max_tokens: int = 80, **kw: Any) -> None:
        self.max_tokens = max_tokens
        super().__init__(**kw)

    accepts = (SQLTask,)
    produces = SQLTask

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        task: SQLTask = inputs[0]
        env = chat_env(ctx, self.name)
        assert task.answer.result is not None and task.pipeline is not None
        messages = [
            Message("system", "You answer questions about data in one short sentence, using only the result given."),
            Message(
                "user",
                f"Question: {task.question}\nQuery result:\n{_result_text(task.answer.result)}\n"
                "Answer in one sentence.",
            ),
        ]
        parts: list[str] = []
        async for text in stream_text(env.llm, task.pipeline.model, messages, self.max_tokens):
            parts.append(text)
            ctx.emit(TextEvent(delta=text))
        task.notes.setdefault("final", {})["text"] = "".join(parts).strip()
        return task

    def params(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens}


@register_operator("scene_answer")
class AnswerOperator(BaseOperator):
    """The ``done`` event: the whole answer (SQL, table, chart, text, attempts, confidence)."""

    node_name = "answer"

    accepts = (SQLTask,)
    produces = dict[str, Any]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        task: SQLTask = inputs[0]
        answer, final = task.answer, task.notes.setdefault("final", {})
        assert answer.result is not None
        final.update(
            summary=summary_of(answer.result),
            table=answer.result.to_dict(),
            attempts=[a.to_dict() for a in answer.attempts],
            tables=answer.tables,
        )
        out = _with_notes(final, task.notes)
        ctx.emit(DoneEvent(answer=out))
        return out


# --- excel: a file loaded into DuckDB, its columns described ------------------------------------------


@register_operator("excel_load")
class LoadFileOperator(BaseOperator):
    """``file`` given: load it as a new data source (``step loaded``); then check the source is a file."""

    accepts = (SceneRequest,)
    produces = SceneRequest
    node_name = "load"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request: SceneRequest = inputs[0]
        env = chat_env(ctx, self.name)
        source = request.datasource
        if request.file:
            path = Path(request.file)
            try:
                content = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise InvalidRequestError(f"could not read {path}: {exc.strerror or exc}", param="file") from None
            config = await env.sources.add_upload(path.name, content)
            source = config.name
            ctx.emit(StepEvent(name="loaded", datasource=source, file=path.name))
        if not source:
            raise InvalidRequestError(
                "the excel scene needs an uploaded file: give datasource (or file)", param="datasource"
            )
        config = env.sources.get(source)
        if config.kind not in FILE_KINDS:
            raise InvalidRequestError(f"data source {source!r} is not a file (kind {config.kind})", param="datasource")
        return SceneRequest(request.question, source, request.model, request.style, None, request.history)


async def describe_columns(connector: Connector, table: TableInfo) -> list[dict[str, Any]]:
    """Per column: its cleaned and original name, type, nulls, distinct values, range and examples."""
    out = []
    for c in table.columns:
        q = f'"{c.name}"'
        t = f'"{table.name}"'
        stats = await connector.run(
            f"SELECT COUNT(*) - COUNT({q}), COUNT(DISTINCT {q}), MIN({q}), MAX({q}) FROM {t}", limit=1
        )
        nulls, distinct, lo, hi = stats.rows[0]
        original = None
        if c.comment and c.comment.startswith("from column "):
            original = c.comment.removeprefix("from column ").strip("'\"")
        out.append(
            {
                "name": c.name,
                "original": original or c.name,
                "type": c.type,
                "nulls": jsonable(nulls),
                "distinct": jsonable(distinct),
                "min": jsonable(lo),
                "max": jsonable(hi),
                "examples": [jsonable(v) for v in c.samples],
            }
        )
    return out


@register_operator("excel_describe")
class DescribeOperator(BaseOperator):
    """Each table's columns, cleaned and described (``columns``), kept for the final answer."""

    accepts = (Connection,)
    produces = Connection
    node_name = "describe"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        conn: Connection = inputs[0]
        tables = await conn.connector.schema()
        described = {t.name: await describe_columns(conn.connector, t) for t in tables}
        ctx.emit(ColumnsEvent(datasource=conn.source, tables=described))
        conn.notes["columns"] = described
        return conn


# --- db_qa: questions about the schema --------------------------------------------------------------------


@register_operator("db_qa_answer")
class SchemaAnswerOperator(BaseOperator):
    """The tables the question is about (``schema``), then the model's answer from them (``text``)."""

    def __init__(self, max_tokens: int = 120, **kw: Any) -> None:
        self.max_tokens = max_tokens
        super().__init__(**kw)

    accepts = (Connection,)
    produces = dict[str, Any]
    node_name = "answer"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        conn: Connection = inputs[0]
        env = chat_env(ctx, self.name)
        tables = await env.linker(conn.source).select(conn.question, await conn.connector.schema())
        overview = [
            {"name": t.name, "comment": t.comment, "rows": t.row_count, "columns": [c.name for c in t.columns]}
            for t in tables
        ]
        ctx.emit(SchemaEvent(datasource=conn.source, tables=[t.to_dict() for t in tables]))
        lines = [
            f"{t.describe()} ({t.row_count} rows)"
            + "".join(f"; {', '.join(fk.columns)} -> {fk.ref_table}" for fk in t.foreign_keys)
            for t in tables
        ]
        messages = [
            Message(
                "system",
                "You answer questions about a database's structure in one or two short sentences, using the schema.",
            ),
            Message("user", "Schema:\n" + "\n".join(lines) + f"\n\nQuestion: {conn.question}"),
        ]
        parts: list[str] = []
        model = env.model_for(getattr(conn.request, "model", None))
        async for text in stream_text(env.llm, model, messages, max_tokens=self.max_tokens):
            parts.append(text)
            ctx.emit(TextEvent(delta=text))
        out = {"question": conn.question, "datasource": conn.source, "text": "".join(parts).strip(), "tables": overview}
        ctx.emit(DoneEvent(answer=out))
        return out

    def params(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens}


# --- dashboard: several analyses at once ------------------------------------------------------------------

_SPLIT = re.compile(r"\s*(?:\n+|;|\uff1b|\?\s+|\uff1f|\d+[.)\u3001]\s+|\band also\b|以及|另外)\s*", re.I)


def split_questions(text: str) -> list[str]:
    """Sub-questions of a dashboard request written as a list or as several sentences."""
    parts = [p.strip(" -*\u2022,\uff0c\u3002") for p in _SPLIT.split(text)]
    return [p for p in parts if len(p) > 3]


DASHBOARD_SYSTEM = (
    "You are a data analyst building a dashboard. Reply with a JSON array of 2 to 4 analyses and nothing "
    'else: [{{"title": "...", "sql": "<one read-only {dialect} SELECT>", "chart": "bar|line|pie|scatter|table"}}]. '
    "Use only the tables and columns in the schema."
)
# The same request where the answer is held to DASHBOARD_SCHEMA (an object: the root of a JSON schema answer).
DASHBOARD_SYSTEM_JSON = (
    "You are a data analyst building a dashboard. Reply with a JSON object holding 2 to 4 analyses: "
    '{{"analyses": [{{"title": "...", "sql": "<one read-only {dialect} SELECT>", '
    '"chart": "bar|line|pie|scatter|table"}}]}}. Use only the tables and columns in the schema.'
)
DASHBOARD_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "analyses": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 80},
                    "sql": {"type": "string", "minLength": 1, "maxLength": 600},
                    "chart": {"enum": ["bar", "line", "pie", "scatter", "table"]},
                },
                "required": ["title", "sql", "chart"],
            },
        }
    },
    "required": ["analyses"],
}
# Four analyses at their longest under DASHBOARD_SCHEMA, with room to spare: cut JSON is no plan.
DASHBOARD_TOKENS = 1000
DASHBOARD_TEXT_TOKENS = 600


@dataclass(slots=True)
class DashboardPlan:
    """The analyses the model planned for a dashboard request, and how its answer ended."""

    conn: Connection
    model: str
    planned: list[Any]
    structured: bool
    finish: list[str]


@register_operator("dashboard_plan")
class PlanOperator(BaseOperator):
    """The model plans 2 to 4 analyses (title, SQL, chart) over the linked tables (``step plan``):
    under ``DASHBOARD_SCHEMA`` when it enforces JSON schemas, else as text (repaired when malformed)."""

    accepts = (Connection,)
    produces = DashboardPlan
    node_name = "plan"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        conn: Connection = inputs[0]
        env = chat_env(ctx, self.name)
        model = env.model_for(getattr(conn.request, "model", None))
        connector = conn.connector
        tables = await env.linker(conn.source).select(conn.question, await connector.schema())
        structured = await model_supports(env.llm, model, "json_schema")
        ctx.emit(StepEvent(name="plan", datasource=conn.source, tables=[t.name for t in tables], structured=structured))
        messages = sql_chat_messages(conn.question, tables, connector.dialect)
        system = DASHBOARD_SYSTEM_JSON if structured else DASHBOARD_SYSTEM
        messages[0] = Message("system", system.format(dialect=connector.dialect))
        fmt = ResponseFormat("json_schema", DASHBOARD_SCHEMA, "dashboard") if structured else None
        room = DASHBOARD_TOKENS if structured else DASHBOARD_TEXT_TOKENS
        finish: list[str] = []
        try:
            text = "".join([t async for t in stream_text(env.llm, model, messages, room, fmt, finish)])
        except ContextLengthExceededError:
            if room <= DASHBOARD_TEXT_TOKENS:
                raise
            # The schema's room did not fit this model's context next to the schema: the usual room does.
            text = "".join([t async for t in stream_text(env.llm, model, messages, DASHBOARD_TEXT_TOKENS, fmt, finish)])
        return DashboardPlan(conn, model, parse_answer_list(text), structured, finish)


@register_operator("dashboard_run")
class RunAnalysesOperator(BaseOperator):
    """Runs each planned analysis read-only (``analysis`` events). When none yields a table, the
    request is split into its sub-questions, each answered by text-to-SQL; ``step fallback`` says why."""

    accepts = (DashboardPlan,)
    produces = dict[str, Any]
    node_name = "run"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        plan: DashboardPlan = inputs[0]
        env = chat_env(ctx, self.name)
        conn, connector = plan.conn, plan.conn.connector
        analyses: list[dict[str, Any]] = []
        for i, item in enumerate(plan.planned[:6]):
            title = item.title or f"Analysis {i + 1}"
            sql = transpile(item.sql or "", connector.dialect)
            entry: dict[str, Any] = {"title": title, "sql": sql, "chart_wish": item.chart}
            try:
                result = await connector.run(sql, env.settings.row_limit, env.settings.timeout_s)
            except DataPilotError as exc:
                entry["error"] = exc.to_dict()["error"]
            else:
                entry.update(table=result.to_dict(), chart=chart_payload(result, item.chart, title))
            analyses.append(entry)
            ctx.emit(AnalysisEvent(index=i, **entry))
        if not any("table" in a for a in analyses):
            cut = plan.finish[-1:] == ["length"]
            cause = "length" if cut and not plan.planned else "unreadable" if not plan.planned else "invalid"
            ctx.emit(
                StepEvent(
                    name="fallback",
                    reason="the plan was cut at max_tokens"
                    if cause == "length"
                    else "the plan had no runnable analysis",
                    cause=cause,
                    structured=plan.structured,
                )
            )
            for q in split_questions(conn.question) or [conn.question]:
                answer = await env.text2sql(connector, conn.source, plan.model).answer(q)
                entry = {"title": q, "sql": answer.sql, "chart_wish": None}
                if answer.result is not None:
                    entry.update(table=answer.result.to_dict(), chart=chart_payload(answer.result, None, q))
                elif answer.error is not None:
                    entry["error"] = answer.error.to_dict()["error"]
                analyses.append(entry)
                ctx.emit(AnalysisEvent(index=len(analyses) - 1, **entry))
        out = {"question": conn.question, "datasource": conn.source, "analyses": analyses}
        ctx.emit(DoneEvent(answer=out))
        return out


# --- chat: a plain conversation with the model --------------------------------------------------------------


@register_operator("chat_answer")
class ChatAnswerOperator(BaseOperator):
    """A plain chat turn: the history and the question to the model, the answer streamed (``text``)."""

    def __init__(self, system: str = "You are a helpful assistant. Answer briefly.", max_tokens: int = 256, **kw: Any):
        self.system, self.max_tokens = system, max_tokens
        super().__init__(**kw)

    accepts = (SceneRequest,)
    produces = dict[str, Any]
    node_name = "answer"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        request: SceneRequest = inputs[0]
        env = chat_env(ctx, self.name)
        model = env.model_for(request.model)
        messages = [Message("system", self.system), *request.history, Message("user", request.question)]
        parts: list[str] = []
        async for text in stream_text(env.llm, model, messages, self.max_tokens):
            parts.append(text)
            ctx.emit(TextEvent(delta=text))
        out = {"question": request.question, "model": model, "text": "".join(parts).strip()}
        ctx.emit(DoneEvent(answer=out))
        return out

    def params(self) -> dict[str, Any]:
        return {"system": self.system, "max_tokens": self.max_tokens}
