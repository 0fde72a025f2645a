"""Chat scenes over data: ``db_qa``, ``data``, ``excel`` and ``dashboard``.

A scene turns one request into a stream of events, so the REST API can send them as SSE and the CLI
can print them as they come:

* ``{"type": "step", "name": ...}``: progress (schema linked, model asked, ...);
* ``{"type": "sql", "sql": ...}``, ``{"type": "table", ...}``, ``{"type": "chart", ...}``;
* ``{"type": "text", "delta": ...}``: the short answer, streamed token by token;
* ``{"type": "columns", ...}`` (excel), ``{"type": "analysis", ...}`` (dashboard, one per chart);
* ``{"type": "error", "error": {...}}`` and finally ``{"type": "done", "answer": {...}}``.

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
from typing import TYPE_CHECKING, Any, Protocol

from datapilot.apps._charts import choose_chart, vega_lite
from datapilot.core.client import LLMClient
from datapilot.core.config import DataSettings
from datapilot.core.errors import ContextLengthExceededError, DataPilotError, InvalidRequestError
from datapilot.core.types import Message, ModelRequest, ResponseFormat, SamplingParams
from datapilot.datasource import Connector, DataSources, QueryResult, TableInfo, jsonable
from datapilot.text2sql import (
    Grounding,
    SchemaLinker,
    SQLAnswer,
    Text2SQL,
    Text2SQLOptions,
    parse_answer_list,
    transpile,
)
from datapilot.text2sql import (
    chat_messages as sql_chat_messages,
)

if TYPE_CHECKING:
    from datapilot.cache import Embedder

Event = dict[str, Any]
ANSWER_ROWS = 12  # rows of the result shown to the model when it writes the short answer


@dataclass(slots=True)
class ChatContext:
    """What scenes use: a model client, the model's name, the data sources and the data settings."""

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


@dataclass(slots=True)
class SceneRequest:
    question: str
    datasource: str | None = None
    model: str | None = None
    style: str = "completion"  # text-to-SQL prompt style: completion (base models) or chat (JSON)
    file: str | None = None  # excel: a local file to load (library and CLI use)
    history: list[Message] = field(default_factory=list)


class Scene(Protocol):
    def __call__(self, ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]: ...


_SCENES: dict[str, Scene] = {}


def register_scene(name: str, scene: Scene) -> None:
    _SCENES[name] = scene


def scene_names() -> list[str]:
    return sorted(_SCENES)


def run_scene(name: str, ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    scene = _SCENES.get(name)
    if scene is None:
        raise InvalidRequestError(f"unknown chat scene {name!r}; known: {', '.join(scene_names())}", param="scene")
    if not request.question or not request.question.strip():
        raise InvalidRequestError("the question is empty", param="question")
    return scene(ctx, request)


async def chat(name: str, ctx: ChatContext, request: SceneRequest) -> dict[str, Any]:
    """Run a scene to the end and return its final answer (the ``done`` event's body)."""
    final: dict[str, Any] = {}
    async for event in run_scene(name, ctx, request):
        if event["type"] == "done":
            final = event["answer"]
    return final


# --- shared pieces ----------------------------------------------------------------------------------------


def _error_event(exc: DataPilotError) -> Event:
    return {"type": "error", "error": exc.to_dict()["error"]}


def _table_event(result: QueryResult) -> Event:
    return {"type": "table", **result.to_dict()}


def chart_payload(result: QueryResult, wish: str | None, title: str) -> dict[str, Any]:
    spec = choose_chart(result, wish, title)
    return {"spec": spec.to_dict(), "vega_lite": vega_lite(spec, result)}


def _result_text(result: QueryResult) -> str:
    rows = result.rows[:ANSWER_ROWS]
    lines = [" | ".join(result.columns)] + [" | ".join(str(jsonable(v)) for v in r) for r in rows]
    more = f"\n({len(result.rows) - len(rows)} more rows)" if len(result.rows) > len(rows) else ""
    return "\n".join(lines) + more


async def _stream_text(
    ctx: ChatContext,
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
    async for chunk in ctx.llm.stream(request):
        if chunk.text:
            yield chunk.text
        if chunk.finish_reason is not None and finish is not None:
            finish.append(chunk.finish_reason)


async def model_supports(ctx: ChatContext, model: str, capability: str) -> bool:
    """Whether ``model`` lists ``capability`` (``json_schema``, ``tools``...); False when unknown."""
    try:
        infos = await ctx.llm.models()
    except DataPilotError:
        return False
    return any(m.name == model and capability in m.capabilities for m in infos)


def summary_of(result: QueryResult) -> str:
    """A plain statement of what came back, independent of the model."""
    if len(result.rows) == 1 and len(result.columns) == 1:
        return f"{result.columns[0]} = {jsonable(result.rows[0][0])}"
    more = " (cut at the row limit)" if result.truncated else ""
    return f"{len(result.rows)} rows, columns: {', '.join(result.columns)}{more}"


async def _answer_events(ctx: ChatContext, model: str, question: str, result: QueryResult) -> AsyncIterator[Event]:
    messages = [
        Message("system", "You answer questions about data in one short sentence, using only the result given."),
        Message("user", f"Question: {question}\nQuery result:\n{_result_text(result)}\nAnswer in one sentence."),
    ]
    async for text in _stream_text(ctx, model, messages):
        yield {"type": "text", "delta": text}


async def _text2sql_events(
    ctx: ChatContext, connector: Connector, source: str, request: SceneRequest, model: str
) -> AsyncIterator[Event]:
    """question -> SQL -> table -> chart -> short answer; the SQLAnswer is attached to ``done``."""
    pipeline = Text2SQL(
        ctx.llm,
        model,
        connector,
        linker=ctx.linker(source),
        options=ctx.options(style=request.style, trained=model in ctx.trained),
        grounding=ctx.grounded(source),
    )
    answer = SQLAnswer(request.question)
    yield {"type": "step", "name": "text2sql", "datasource": source, "model": model}
    async for ev in pipeline.steps(request.question, answer):
        if ev["type"] == "attempt":
            yield {
                "type": "step",
                "name": "attempt",
                "round": ev["round"],
                "candidate": ev["candidate"],
                "sql": ev["sql"],
                "error": ev["error"],
            }
        elif ev["type"] == "tables":
            yield {"type": "step", "name": "schema", "tables": ev["tables"]}
        elif ev["type"] == "values":
            yield {"type": "step", "name": "values", "hits": ev["hits"]}
        elif ev["type"] == "reuse":
            yield {"type": "step", "name": "reuse", **{k: v for k, v in ev.items() if k != "type"}}
        elif ev["type"] == "vote":
            yield {"type": "step", "name": "vote", **{k: v for k, v in ev.items() if k != "type"}}
    final: dict[str, Any] = {
        "question": request.question,
        "datasource": source,
        "sql": answer.sql,
        "text": "",
        # How sure the pipeline is: candidates' agreement, or 1.0 for a verified SQL reused.
        "confidence": round(answer.confidence, 4),
        "reused": answer.reused.to_dict() if answer.reused else None,
    }
    if answer.sql:
        yield {"type": "sql", "sql": answer.sql}
    if answer.result is None:
        err = answer.error or InvalidRequestError("no answer")
        yield _error_event(err)
        final["error"] = err.to_dict()["error"]
        final["attempts"] = [a.to_dict() for a in answer.attempts]
        yield {"type": "done", "answer": final}
        return
    result = answer.result
    yield _table_event(result)
    chart = chart_payload(result, answer.chart, request.question)
    yield {"type": "chart", **chart}
    parts: list[str] = []
    async for ev in _answer_events(ctx, model, request.question, result):
        parts.append(ev["delta"])
        yield ev
    final.update(
        text="".join(parts).strip(),
        summary=summary_of(result),
        table=result.to_dict(),
        chart=chart,
        attempts=[a.to_dict() for a in answer.attempts],
        tables=answer.tables,
    )
    yield {"type": "done", "answer": final}


# --- scenes ---------------------------------------------------------------------------------------------


def _source(ctx: ChatContext, request: SceneRequest) -> str:
    return request.datasource or ctx.settings.default_source


def _model(ctx: ChatContext, request: SceneRequest) -> str:
    return request.model or ctx.model


async def data_scene(ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    """``data``: a question over a database, answered with SQL, a table, a chart and a sentence."""
    source = _source(ctx, request)
    try:
        connector = await ctx.sources.connector(source)
    except DataPilotError as exc:
        yield _error_event(exc)
        yield {"type": "done", "answer": {"question": request.question, "error": exc.to_dict()["error"]}}
        return
    async for ev in _text2sql_events(ctx, connector, source, request, _model(ctx, request)):
        yield ev


async def db_qa_scene(ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    """``db_qa``: questions about the schema and metadata, answered from the introspected schema."""
    source = _source(ctx, request)
    connector = await ctx.sources.connector(source)
    tables = await ctx.linker(source).select(request.question, await connector.schema())
    overview = [
        {"name": t.name, "comment": t.comment, "rows": t.row_count, "columns": [c.name for c in t.columns]}
        for t in tables
    ]
    yield {"type": "schema", "datasource": source, "tables": [t.to_dict() for t in tables]}
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
        Message("user", "Schema:\n" + "\n".join(lines) + f"\n\nQuestion: {request.question}"),
    ]
    parts: list[str] = []
    async for text in _stream_text(ctx, _model(ctx, request), messages, max_tokens=120):
        parts.append(text)
        yield {"type": "text", "delta": text}
    yield {
        "type": "done",
        "answer": {
            "question": request.question,
            "datasource": source,
            "text": "".join(parts).strip(),
            "tables": overview,
        },
    }


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


async def excel_scene(ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    """``excel``: a CSV / Excel / Parquet file (uploaded, or ``file`` given) loaded into DuckDB, its
    columns cleaned and described, then the question answered over it as in ``data``."""
    source = request.datasource
    if request.file:
        path = Path(request.file)
        try:
            content = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise InvalidRequestError(f"could not read {path}: {exc.strerror or exc}", param="file") from None
        config = await ctx.sources.add_upload(path.name, content)
        source = config.name
        yield {"type": "step", "name": "loaded", "datasource": source, "file": path.name}
    if not source:
        raise InvalidRequestError(
            "the excel scene needs an uploaded file: give datasource (or file)", param="datasource"
        )
    config = ctx.sources.get(source)
    if config.kind not in ("csv", "excel", "parquet", "files", "duckdb"):
        raise InvalidRequestError(f"data source {source!r} is not a file (kind {config.kind})", param="datasource")
    connector = await ctx.sources.connector(source)
    tables = await connector.schema()
    described = {t.name: await describe_columns(connector, t) for t in tables}
    yield {"type": "columns", "datasource": source, "tables": described}
    async for ev in _text2sql_events(ctx, connector, source, request, _model(ctx, request)):
        if ev["type"] == "done":
            ev["answer"]["columns"] = described
        yield ev


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


async def dashboard_scene(ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    """``dashboard``: one request, several analyses (title, SQL, chart each), rendered together.

    The model is asked for a JSON plan of analyses: under ``DASHBOARD_SCHEMA`` when it enforces JSON
    schemas, else as text (repaired when malformed). When the plan yields nothing runnable, the request
    is split into its sub-questions, each answered by text-to-SQL; the ``fallback`` step says why.
    """
    source = _source(ctx, request)
    model = _model(ctx, request)
    connector = await ctx.sources.connector(source)
    tables = await ctx.linker(source).select(request.question, await connector.schema())
    structured = await model_supports(ctx, model, "json_schema")
    yield {
        "type": "step",
        "name": "plan",
        "datasource": source,
        "tables": [t.name for t in tables],
        "structured": structured,
    }
    messages = sql_chat_messages(request.question, tables, connector.dialect)
    system = DASHBOARD_SYSTEM_JSON if structured else DASHBOARD_SYSTEM
    messages[0] = Message("system", system.format(dialect=connector.dialect))
    fmt = ResponseFormat("json_schema", DASHBOARD_SCHEMA, "dashboard") if structured else None
    room = DASHBOARD_TOKENS if structured else DASHBOARD_TEXT_TOKENS
    finish: list[str] = []
    try:
        plan_text = "".join([t async for t in _stream_text(ctx, model, messages, room, fmt, finish)])
    except ContextLengthExceededError:
        if room <= DASHBOARD_TEXT_TOKENS:
            raise
        # The schema's room did not fit this model's context next to the schema: the usual room does.
        plan_text = "".join([t async for t in _stream_text(ctx, model, messages, DASHBOARD_TEXT_TOKENS, fmt, finish)])
    planned = parse_answer_list(plan_text)
    analyses: list[dict[str, Any]] = []
    for i, item in enumerate(planned[:6]):
        title = item.title or f"Analysis {i + 1}"
        sql = transpile(item.sql or "", connector.dialect)
        entry: dict[str, Any] = {"title": title, "sql": sql, "chart_wish": item.chart}
        try:
            result = await connector.run(sql, ctx.settings.row_limit, ctx.settings.timeout_s)
        except DataPilotError as exc:
            entry["error"] = exc.to_dict()["error"]
        else:
            entry.update(table=result.to_dict(), chart=chart_payload(result, item.chart, title))
        analyses.append(entry)
        yield {"type": "analysis", "index": i, **entry}
    if not any("table" in a for a in analyses):
        cut = finish[-1:] == ["length"]
        cause = "length" if cut and not planned else "unreadable" if not planned else "invalid"
        yield {
            "type": "step",
            "name": "fallback",
            "reason": "the plan was cut at max_tokens" if cause == "length" else "the plan had no runnable analysis",
            "cause": cause,
            "structured": structured,
        }
        for q in split_questions(request.question) or [request.question]:
            pipeline = Text2SQL(
                ctx.llm, model, connector, linker=ctx.linker(source), options=ctx.options(trained=model in ctx.trained)
            )
            answer = await pipeline.answer(q)
            entry = {"title": q, "sql": answer.sql, "chart_wish": None}
            if answer.result is not None:
                entry.update(table=answer.result.to_dict(), chart=chart_payload(answer.result, None, q))
            elif answer.error is not None:
                entry["error"] = answer.error.to_dict()["error"]
            analyses.append(entry)
            yield {"type": "analysis", "index": len(analyses) - 1, **entry}
    yield {
        "type": "done",
        "answer": {"question": request.question, "datasource": source, "analyses": analyses},
    }


for _name, _scene in (
    ("data", data_scene),
    ("db_qa", db_qa_scene),
    ("excel", excel_scene),
    ("dashboard", dashboard_scene),
):
    register_scene(_name, _scene)
