"""Resources bind agents to things they can act on, each as tools made for one run:

* ``DataResource``: a data source: its schema, read-only SQL, and questions answered by the
  text-to-SQL pipeline; charts through an injected chart function (the apps layer passes its own, so
  charts are drawn one way everywhere);
* ``KnowledgeResource``: a knowledge space's retrieval, numbered for citations;
* ``CodeResource``: the sandboxed code runner, fed the latest table as ``table.csv``/``table.json``.

Every model call a tool makes (text-to-SQL) goes through ``MeteredClient``: charged to the run's
budget and recorded in its trace like the agents' own calls.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from datapilot.agents._agent import ChartArtifact, RunContext, TableArtifact, Task
from datapilot.agents._sandbox import CodeRunner
from datapilot.agents._tools import Tool, ToolOutput
from datapilot.agents._trace import request_key
from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.core.types import ModelChunk, ModelInfo, ModelOutput, ModelRequest, ToolCallDelta
from datapilot.datasource import Connector, QueryResult, TableInfo
from datapilot.text2sql import SchemaLinker, SQLAnswer, Text2SQL, Text2SQLOptions, transpile

ChartFn = Callable[[QueryResult, str | None, str], dict[str, Any]]  # -> {"spec": ..., "vega_lite": ...}
RenderFn = Callable[[dict[str, Any], QueryResult], str | None]  # chart payload -> SVG text
PREVIEW_ROWS = 10
TRACE_ROWS = 50


class BudgetSpentError(DataPilotError):
    status_code = 429
    error_type = "invalid_request_error"
    default_code = "budget_spent"


class MeteredClient:
    """The run's client as a tool sees it: charged to the budget, recorded in the trace."""

    def __init__(self, ctx: RunContext, agent: str, step: int | None) -> None:
        self.ctx, self.agent, self.step = ctx, agent, step

    async def generate(self, request: ModelRequest) -> ModelOutput:
        ctx = self.ctx
        if ctx.budget.exhausted:
            raise BudgetSpentError("the run's token budget is spent")
        if request.params.max_tokens is None or request.params.max_tokens > ctx.budget.remaining_tokens:
            request.params.max_tokens = max(1, ctx.budget.remaining_tokens)
        prompt = request.prompt if request.messages is None else request.messages[-1].content
        await ctx.emit(
            {
                "type": "message",
                "step": self.step,
                "agent": self.agent,
                "role": "user",
                "content": prompt or "",
                "via": "tool",
            }
        )
        out = await ctx.llm.generate(request)
        ctx.budget.charge(out.usage)
        await ctx.emit(
            {
                "type": "message",
                "step": self.step,
                "agent": self.agent,
                "role": "assistant",
                "content": out.text,
                "key": request_key(request),
                "usage": out.usage.to_dict(),
                "finish_reason": out.finish_reason,
                "via": "tool",
                **({"structured": "json_schema"} if request.wants_json else {}),
                **({"tool_calls": [c.to_dict() for c in out.tool_calls]} if out.tool_calls else {}),
            }
        )
        return out

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        out = await self.generate(request)
        deltas = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(out.tool_calls)]
        yield ModelChunk(out.text, finish_reason=out.finish_reason, usage=out.usage, tool_calls=deltas or None)

    async def models(self) -> list[ModelInfo]:
        return await self.ctx.llm.models()


class Retriever(Protocol):
    async def retrieve(self, space: str, query: str, *, k: int | None = None) -> list[Any]: ...


_WORD = re.compile(r"[^\W\d_]{4,}")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")
_FILLER = frozenset({"what", "which", "when", "where", "with", "from", "that", "this", "does", "answer", "question"})


def _terms(text: str) -> set[str]:
    """Words of four letters or more (question words left out), and character pairs of CJK text."""
    words = {w.lower() for w in _WORD.findall(_CJK.sub(" ", text))} - _FILLER
    pairs = {run[i : i + 2] for run in _CJK.findall(text) for i in range(len(run) - 1)}
    return words | pairs


def related(text: str, source: str) -> bool:
    """``text`` shares a word (or, in CJK text, a pair of characters) with ``source``; text too short
    to have any must occur in ``source`` as it is."""
    terms = _terms(text)
    if terms:
        return bool(terms & _terms(source))
    short = text.strip().lower()
    return len(short) >= 3 and short in source.lower()


def _table_text(table: TableArtifact) -> str:
    r = table.result
    shape = f"{len(r.rows)} row(s){' (cut at the row limit)' if r.truncated else ''}"
    return f"table {table.id} ({shape}), columns {', '.join(r.columns)}:\n{table.preview(PREVIEW_ROWS)}"


def _trace_table(table: TableArtifact) -> dict[str, Any]:
    data = table.result.to_dict()
    data["rows"] = data["rows"][:TRACE_ROWS]
    return {"id": table.id, "title": table.title, **data}


@dataclass
class DataResource:
    name: str
    connector: Connector
    chart: ChartFn | None = None
    render: RenderFn | None = None
    linker: SchemaLinker | None = None
    options: Text2SQLOptions = field(default_factory=Text2SQLOptions)
    _schema: list[TableInfo] | None = field(default=None, repr=False)

    async def schema(self) -> list[TableInfo]:
        if self._schema is None:
            self._schema = await self.connector.schema()
        return self._schema

    async def schema_text(self) -> str:
        return "\n".join(t.describe() for t in await self.schema())

    async def query(self, sql: str) -> QueryResult:
        return await self.connector.run(sql, self.options.row_limit, self.options.timeout_s)

    async def answer(self, question: str, ctx: RunContext, agent: str, step: int | None) -> SQLAnswer:
        """A question through the text-to-SQL pipeline, its model calls metered."""
        pipeline = Text2SQL(
            MeteredClient(ctx, agent, step), ctx.model, self.connector, linker=self.linker, options=self.options
        )
        return await pipeline.answer(question)

    async def add_table(self, ctx: RunContext, title: str, result: QueryResult, step: int | None) -> TableArtifact:
        table = ctx.workspace.add_table(title, result, step)
        await ctx.emit({"type": "table", "step": step, **_trace_table(table)})
        return table

    async def add_chart(
        self, ctx: RunContext, table: TableArtifact, wish: str | None, title: str, step: int | None
    ) -> ChartArtifact:
        if self.chart is None:
            raise InvalidRequestError("charts are not available: the data resource has no chart function")
        payload = self.chart(table.result, wish or None, title or table.title)
        svg = None
        if self.render is not None:
            try:
                svg = self.render(payload, table.result)
            except Exception as exc:  # a chart that cannot be drawn is still a spec the UI can render
                await ctx.emit({"type": "note", "step": step, "note": f"could not draw the chart as SVG: {exc}"})
        chart = ChartArtifact(f"c{len(ctx.workspace.charts) + 1}", title or table.title, table.id, payload, svg, step)
        ctx.workspace.charts.append(chart)
        await ctx.emit(
            {"type": "chart", "step": step, "id": chart.id, "title": chart.title, "table": table.id, **payload}
        )
        return chart

    def data_tools(self, ctx: RunContext, task: Task, agent: str) -> list[Tool]:
        async def list_tables() -> str:
            """The data source's tables with their columns."""
            return await self.schema_text()

        async def run_sql(sql: str, title: str = "") -> ToolOutput:
            """Run one read-only SQL query (SELECT) on the data source and keep its result as a table."""
            result = await self.query(sql)
            table = await self.add_table(ctx, title or task.task, result, task.id)
            return ToolOutput(_table_text(table), {"table": table.id, "rows": len(result.rows)})

        async def ask_data(question: str) -> ToolOutput:
            """Answer a question about the data with text-to-SQL: writes, checks and runs the query."""
            if not related(question, f"{task.task}\n{ctx.trace.goal}\n{await self.schema_text()}"):
                # A small model held to the call's shape may fill it with a question from elsewhere.
                raise InvalidRequestError(
                    f"the question {question!r} mentions nothing of the task or the data: ask about the task"
                )
            answer = await self.answer(question, ctx, agent, task.id)
            if answer.result is None:
                error = answer.error.message if answer.error else "no query could be written"
                raise InvalidRequestError(f"{error} (last SQL: {answer.sql})")
            table = await self.add_table(ctx, question, answer.result, task.id)
            return ToolOutput(f"SQL: {answer.sql}\n{_table_text(table)}", {"table": table.id, "sql": answer.sql})

        # The surest tool first: a model shown its tools by example tends to call the first one.
        return [Tool.from_function(f) for f in (ask_data, run_sql, list_tables)]

    def chart_tools(self, ctx: RunContext, task: Task) -> list[Tool]:
        async def make_chart(table: str = "", kind: str = "", title: str = "") -> ToolOutput:
            """Draw a chart of a table (default: the latest); kind: bar, line, pie, scatter or empty to choose."""
            found = ctx.workspace.tables.get(table) if table else ctx.workspace.latest_table()
            if found is None:
                known = ", ".join(ctx.workspace.tables) or "none yet"
                raise InvalidRequestError(f"no table {table!r} (tables: {known})")
            chart = await self.add_chart(ctx, found, kind, title, task.id)
            return ToolOutput(
                f"chart {chart.id}: {chart.chart['spec']['kind']} of table {found.id}", {"chart": chart.id}
            )

        return [Tool.from_function(make_chart)]

    async def profile_query(self) -> tuple[str, str] | None:
        """A model-free overview query: rows per month of the largest table with a date column."""
        best: tuple[int, str, str] | None = None
        for t in await self.schema():
            for c in t.columns:
                sample = str(c.samples[0]) if c.samples else ""
                if re.search(r"date|time|day", c.name, re.I) or re.match(r"^\d{4}-\d{2}-\d{2}", sample):
                    rows = t.row_count or 0
                    if best is None or rows > best[0]:
                        best = (rows, t.name, c.name)
                    break
        if best is None:
            return None
        _, table, column = best
        sql = (
            f'SELECT substr(CAST("{column}" AS TEXT), 1, 7) AS month, COUNT(*) AS "{table}" FROM "{table}" '
            f"GROUP BY 1 ORDER BY 1"
        )
        return f"{table} per month", transpile(sql, self.connector.dialect, "sqlite")


@dataclass
class KnowledgeResource:
    space: str
    knowledge: Retriever
    k: int = 4

    async def search(self, ctx: RunContext, query: str, step: int | None) -> list[dict[str, Any]]:
        passages = await self.knowledge.retrieve(self.space, query, k=self.k)
        found: list[dict[str, Any]] = []
        for p in passages:
            known = next((c for c in ctx.workspace.passages if c["chunk_id"] == p.chunk.id), None)
            if known is None:
                known = {
                    "n": len(ctx.workspace.passages) + 1,
                    "chunk_id": p.chunk.id,
                    "source": p.source,
                    "page": p.chunk.page,
                    "section": p.chunk.section,
                    "text": p.chunk.text,
                    "score": round(float(p.score), 4),
                    "space": self.space,
                    "step": step,
                }
                ctx.workspace.passages.append(known)
            found.append(known)
        return found

    def tools(self, ctx: RunContext, task: Task) -> list[Tool]:
        async def search_knowledge(query: str) -> ToolOutput:
            """Search the knowledge space; passages come back numbered, cite them as [n]."""
            found = await self.search(ctx, query, task.id)
            if not found:
                return ToolOutput(f"nothing found in {self.space!r} for {query!r}", {"passages": []})
            text = "\n".join(f"[{c['n']}] ({c['source']}) {' '.join(c['text'].split())[:400]}" for c in found)
            return ToolOutput(text, {"passages": [c["n"] for c in found]})

        return [Tool.from_function(search_knowledge)]


@dataclass
class CodeResource:
    runner: CodeRunner

    def tools(self, ctx: RunContext, task: Task) -> list[Tool]:
        async def run_python(code: str) -> ToolOutput:
            """Run Python 3 code in a sandbox (no network, files only in its folder, time and memory limits).
            The latest table is in table.csv and table.json; print what you find."""
            result = await self.run(ctx, code, task.id)
            if not result["ok"]:
                raise RuntimeError(result["observation"])
            return ToolOutput(result["observation"], result["data"])

        return [Tool.from_function(run_python)]

    async def run(self, ctx: RunContext, code: str, step: int | None) -> dict[str, Any]:
        files: dict[str, str | bytes] = {}
        table = ctx.workspace.latest_table()
        if table is not None:
            files = {"table.csv": table_csv(table.result), "table.json": json.dumps(table.result.records())}
        result = await self.runner.run(code, files)
        entry = {"step": step, "code": code, **result.to_dict()}
        ctx.workspace.code_runs.append(entry)
        return {"ok": result.ok, "observation": result.observation(), "data": result.to_dict()}


def table_csv(result: QueryResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(result.columns)
    for row in result.to_dict()["rows"]:
        writer.writerow(row)
    return buf.getvalue()
