"""The text-to-SQL pipeline: question -> linked schema -> prompt -> model -> SQL -> guard -> result.

A database error (or SQL that does not parse) goes back to the model with the failed query, at most
``max_corrections`` times. A statement the guard refuses as a write is never retried: the answer
reports the refusal and nothing reaches the database.

When the model enforces grammars (``"grammar"`` in its capabilities) the SQL it writes is constrained
by a grammar built from the linked tables: only their names, only their columns, one SELECT
(``sql_grammar`` after the completion prompt's open SELECT, ``answer_grammar`` for the chat prompt's
JSON answer). A dialect the grammar cannot express, or a model that refuses the grammar, leaves
generation unconstrained, with the correction loop as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from datapilot.core.client import LLMClient
from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.core.types import Message, ModelRequest, SamplingParams
from datapilot.datasource import (
    Connector,
    QueryError,
    QueryResult,
    QueryTimeoutError,
    SQLSyntaxError,
    TableInfo,
    UnsafeSQLError,
    check_read_only,
)
from datapilot.text2sql._extract import extract_sql, parse_answer
from datapilot.text2sql._grammar import answer_grammar, sql_grammar
from datapilot.text2sql._linking import SchemaLinker
from datapilot.text2sql._prompt import (
    CHART_TYPES,
    COMPLETION_STOPS,
    Example,
    chat_correction,
    chat_messages,
    completion_correction,
    completion_prompt,
)
from datapilot.text2sql._transpile import transpile

log = logging.getLogger("datapilot.text2sql")

GRAMMAR_CAPABILITY = "grammar"  # what a model that enforces GBNF grammars lists in its capabilities

PromptStyle = Literal["completion", "chat"]


@dataclass(slots=True)
class Attempt:
    """One model answer: the raw text, the SQL taken from it, and what went wrong if anything."""

    raw: str
    sql: str | None
    error: str | None = None
    code: str | None = None
    constrained: bool = False  # generated under the schema's grammar

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "sql": self.sql,
            "error": self.error,
            "code": self.code,
            "constrained": self.constrained,
        }


@dataclass(slots=True)
class SQLAnswer:
    question: str
    sql: str | None = None
    result: QueryResult | None = None
    thoughts: str = ""
    chart: str | None = None
    tables: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    error: DataPilotError | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "sql": self.sql,
            "result": self.result.to_dict() if self.result else None,
            "thoughts": self.thoughts,
            "chart": self.chart,
            "tables": self.tables,
            "attempts": [a.to_dict() for a in self.attempts],
            "error": self.error.to_dict()["error"] if self.error else None,
            "elapsed_ms": round(self.elapsed_ms, 2),
        }


@dataclass(slots=True)
class Text2SQLOptions:
    style: PromptStyle = "completion"
    max_corrections: int = 2
    row_limit: int = 1000
    timeout_s: float = 30.0
    max_tokens: int = 160
    temperature: float = 0.0
    source_dialect: str | None = None  # the dialect the model writes, when it is not the database's
    examples: list[Example] | None = None  # default: written from the schema
    constrain: bool = True  # constrain the SQL by the linked schema's grammar when the model can


class Text2SQL:
    """Answers questions with SQL over one connector, through any ``LLMClient``."""

    def __init__(
        self,
        llm: LLMClient,
        model: str,
        connector: Connector,
        *,
        linker: SchemaLinker | None = None,
        options: Text2SQLOptions | None = None,
    ) -> None:
        self.llm, self.model, self.connector = llm, model, connector
        self.linker = linker or SchemaLinker()
        self.options = options or Text2SQLOptions()
        self._schema: list[TableInfo] | None = None
        self._grammars: bool | None = None  # whether the model enforces grammars, asked once
        self._grammar_texts: dict[tuple[str, ...], str | None] = {}  # linked tables -> their grammar

    async def schema(self) -> list[TableInfo]:
        if self._schema is None:
            self._schema = await self.connector.schema()
        return self._schema

    async def answer(self, question: str) -> SQLAnswer:
        answer = SQLAnswer(question)
        async for _ in self.steps(question, answer):
            pass
        return answer

    async def steps(self, question: str, answer: SQLAnswer) -> AsyncIterator[dict[str, Any]]:
        """Run the pipeline, filling ``answer`` and yielding progress events as it goes:
        ``{"type": "tables"}``, ``{"type": "attempt"}`` (one per model answer), ``{"type": "sql"}``."""
        started = time.perf_counter()
        opts = self.options
        try:
            tables = await self.linker.select(question, await self.schema())
            answer.tables = [t.name for t in tables]
            yield {"type": "tables", "tables": answer.tables}
            dialect = self.connector.dialect
            prompt: str | list[Message]
            if opts.style == "chat":
                prompt = chat_messages(question, tables, dialect, opts.examples)
            else:
                prompt = completion_prompt(question, tables, dialect, opts.examples)
            grammar = await self._grammar(tables, dialect)
            for round_ in range(opts.max_corrections + 1):
                raw, constrained = await self._ask(prompt, grammar)
                grammar = grammar if constrained else None
                attempt = self._read(raw)
                attempt.constrained = constrained
                answer.attempts.append(attempt)
                if attempt.sql is not None:
                    try:
                        check_read_only(attempt.sql, dialect)
                        result = await self.connector.run(attempt.sql, opts.row_limit, opts.timeout_s)
                    except UnsafeSQLError as exc:
                        attempt.error, attempt.code = exc.message, exc.code
                        answer.sql, answer.error = attempt.sql, exc
                        yield {"type": "attempt", "round": round_, **attempt.to_dict()}
                        return  # a write is never retried
                    except QueryTimeoutError as exc:
                        attempt.error, attempt.code = exc.message, exc.code
                        answer.sql, answer.error = attempt.sql, exc
                        yield {"type": "attempt", "round": round_, **attempt.to_dict()}
                        return
                    except (SQLSyntaxError, QueryError) as exc:
                        attempt.error, attempt.code = exc.message, exc.code
                        answer.sql, answer.error = attempt.sql, exc
                    else:
                        answer.sql, answer.result, answer.error = attempt.sql, result, None
                        yield {"type": "attempt", "round": round_, **attempt.to_dict()}
                        yield {"type": "sql", "sql": attempt.sql}
                        return
                else:
                    attempt.error, attempt.code = "no SQL found in the model's answer", "no_sql"
                    answer.error = SQLSyntaxError("the model's answer contained no SQL query", code="no_sql")
                yield {"type": "attempt", "round": round_, **attempt.to_dict()}
                if isinstance(prompt, str):
                    prompt = completion_correction(prompt, attempt.sql or raw.strip() or "SELECT", attempt.error)
                else:
                    prompt = chat_correction(prompt, raw, attempt.error)
        finally:
            answer.elapsed_ms = (time.perf_counter() - started) * 1000
            if answer.attempts:
                last = answer.attempts[-1]
                parsed = parse_answer(last.raw) if self.options.style == "chat" else None
                if parsed is not None:
                    answer.thoughts, answer.chart = parsed.thoughts, parsed.chart

    async def _grammar(self, tables: list[TableInfo], dialect: str) -> str | None:
        """The grammar for this question's answer, or ``None`` when generation stays unconstrained."""
        if not self.options.constrain or not await self._enforces_grammars():
            return None
        key = tuple(t.name for t in tables)
        if key not in self._grammar_texts:
            dialect = self.options.source_dialect or dialect  # the grammar is for the SQL the model writes
            if self.options.style == "chat":
                grammar = answer_grammar(tables, dialect, CHART_TYPES)
            else:  # the prompt ends with "SELECT"; its stop strings end generation after the statement
                grammar = sql_grammar(tables, dialect, prefix="SELECT", open_end=True)
            self._grammar_texts[key] = grammar
        return self._grammar_texts[key]

    async def _enforces_grammars(self) -> bool:
        if self._grammars is None:
            try:
                infos = await self.llm.models()
            except DataPilotError as exc:
                log.warning("could not list models (%s): SQL generation stays unconstrained", exc.message)
                infos = []
            self._grammars = any(i.name == self.model and GRAMMAR_CAPABILITY in i.capabilities for i in infos)
        return self._grammars

    async def _ask(self, prompt: str | list[Message], grammar: str | None = None) -> tuple[str, bool]:
        """The model's answer, and whether ``grammar`` constrained it."""
        opts = self.options
        # Greedy and unseeded: llama.cpp then reuses the cached schema prefix across questions.
        params = SamplingParams(max_tokens=opts.max_tokens, temperature=opts.temperature, repeat_penalty=1.0)
        if isinstance(prompt, str):
            params.stop = list(COMPLETION_STOPS)
            request = ModelRequest(model=self.model, prompt=prompt, params=params, grammar=grammar)
        else:
            request = ModelRequest(model=self.model, messages=prompt, params=params, grammar=grammar)
        try:
            out = await self.llm.generate(request)
        except InvalidRequestError as exc:
            if grammar is None or exc.param != "grammar":
                raise
            # A grammar the model's server refuses must not cost the answer: ask again without it.
            log.warning("the model refused the SQL grammar (%s): generating unconstrained", exc.message)
            self._grammars = False
            request.grammar = None
            out = await self.llm.generate(request)
            return out.text, False
        return out.text, grammar is not None

    def _read(self, raw: str) -> Attempt:
        prefix = "SELECT " if self.options.style == "completion" else ""
        dialect = self.connector.dialect
        sql = extract_sql(raw, prefix=prefix, dialect=dialect)
        if sql is None:
            return Attempt(raw, None)
        return Attempt(raw, transpile(sql, dialect, self.options.source_dialect))
