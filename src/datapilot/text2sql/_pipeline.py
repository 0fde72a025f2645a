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

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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
from datapilot.text2sql._eval import normalise_value as _norm
from datapilot.text2sql._extract import extract_sql, parse_answer
from datapilot.text2sql._grammar import answer_grammar, sql_grammar
from datapilot.text2sql._grounding import Grounding, Reuse, reuse, verified_examples
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
from datapilot.text2sql._shots import Shot, example_pool, pick_examples
from datapilot.text2sql._transpile import transpile

if TYPE_CHECKING:
    from datapilot.text2sql._examples import StoredExample
    from datapilot.text2sql._values import ValueHit

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
    candidate: int = 0  # which candidate it belongs to (0: the greedy one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
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
    confidence: float = 0.0  # the share of candidates whose result agrees with the answer's (1: reused)
    vote: dict[str, Any] = field(default_factory=dict)
    reused: Reuse | None = None  # the verified example whose SQL answered, without the model

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
            "confidence": round(self.confidence, 4),
            "vote": self.vote,
            "reused": self.reused.to_dict() if self.reused else None,
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
    shots: int = 4  # worked examples in the prompt, picked for the question from a pool over the schema
    pick_examples: bool = True  # False: the fixed examples written from the schema (schema_examples)
    values: bool = True  # hints on the real values a question names (needs a grounding with a value index)
    verified: bool = True  # verified examples: shown to the model, and reused when a question repeats one
    reuse_threshold: float = 0.85  # similarity of masked questions at which a verified SQL is reused
    example_threshold: float = 0.5  # ... at which a verified example is shown to the model
    candidates: int = 1  # answers written per question; execution decides among them
    sample_temperature: float = 0.7  # for the candidates after the first, greedy one
    trained: bool = False  # the model was fine-tuned on this database: no worked examples, no samples


@dataclass(slots=True)
class _Candidate:
    index: int
    attempts: list[Attempt] = field(default_factory=list)
    sql: str | None = None
    result: QueryResult | None = None
    error: DataPilotError | None = None


@dataclass(slots=True)
class SQLTask:
    """One question on its way through the pipeline's stages: what each stage found so far.

    ``done`` is set when the task needs no further stage (a verified SQL answered it, the source has
    no tables, or the vote settled it); a flow's later text2sql operators then pass it on untouched.
    """

    question: str
    answer: SQLAnswer
    pipeline: Text2SQL | None = None  # the pipeline a flow's operators run the stages of
    source: str = ""
    schema: list[TableInfo] = field(default_factory=list)
    hits: list[ValueHit] = field(default_factory=list)
    ranked: list[tuple[StoredExample, float]] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    prompt: str | list[Message] | None = None
    grammar: str | None = None
    candidates: list[_Candidate] = field(default_factory=list)
    done: bool = False
    started: float = field(default_factory=time.perf_counter)
    notes: dict[str, Any] = field(default_factory=dict)  # what a scene adds to the final answer


def _signature(result: QueryResult) -> tuple[Any, ...]:
    """What two results share when they agree: their rows as a multiset, values compared loosely."""
    rows = Counter(tuple(_norm(v) for v in row) for row in result.rows)
    return (len(result.columns), tuple(sorted(rows.items(), key=repr)))


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
        grounding: Grounding | None = None,
    ) -> None:
        self.llm, self.model, self.connector = llm, model, connector
        self.grounding = grounding
        self.linker = linker or SchemaLinker()
        self.options = options or Text2SQLOptions()
        self._schema: list[TableInfo] | None = None
        self._grammars: bool | None = None  # whether the model enforces grammars, asked once
        self._grammar_texts: dict[tuple[str, ...], str | None] = {}  # linked tables -> their grammar
        self._pools: dict[tuple[str, ...], list[Shot]] = {}  # linked tables -> their example pool

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
        ``{"type": "values"}`` (the real values the question names), ``{"type": "reuse"}`` (a verified
        example's SQL answered: nothing else follows but ``sql``), ``{"type": "tables"}``,
        ``{"type": "attempt"}`` (one per model answer, with its candidate),
        ``{"type": "vote"}`` (several candidates: which result won) and ``{"type": "sql"}``.

        The stages are the methods a flow's operators call one by one (``text2sql_ground``,
        ``text2sql_link``, ``text2sql_prompt``, ``text2sql_generate``, ``text2sql_vote``)."""
        task = SQLTask(question, answer)
        try:
            for stage in (self.ground, self.link, self.write_prompt, self.generate, self.vote):
                if task.done:
                    break
                async for event in stage(task):
                    yield event
        finally:
            self.finish(task)

    async def ground(self, task: SQLTask) -> AsyncIterator[dict[str, Any]]:
        """The schema, the real values the question names and the verified examples like it; a
        verified example's SQL that answers the question ends the task here (``reuse``)."""
        opts, answer, question = self.options, task.answer, task.question
        task.schema = await self.schema()
        if not task.schema:
            answer.error = InvalidRequestError(
                "the data source has no tables to query: add data to it, or pick another source",
                code="empty_schema",
            )
            task.done = True
            return
        dialect = self.connector.dialect
        g = self.grounding
        task.hits = g.hits(question) if g is not None and opts.values else []
        task.ranked = await g.ranked(question, task.schema) if g is not None and opts.verified else []
        if task.hits:
            yield {"type": "values", "hits": [h.to_dict() for h in task.hits]}
        reused = reuse(question, task.ranked, task.hits, task.schema, threshold=opts.reuse_threshold, dialect=dialect)
        if reused is not None and await self._reuse(reused, answer, dialect):
            task.done = True
            yield {"type": "reuse", **reused.to_dict()}
            yield {"type": "sql", "sql": answer.sql}

    async def link(self, task: SQLTask) -> AsyncIterator[dict[str, Any]]:
        """The tables the question needs (with those its values name, and the join paths between)."""
        task.tables = await self._link(task.question, task.schema, task.hits)
        task.answer.tables = [t.name for t in task.tables]
        yield {"type": "tables", "tables": task.answer.tables}

    async def write_prompt(self, task: SQLTask) -> AsyncIterator[dict[str, Any]]:
        """The prompt over the linked tables, and the grammar that holds the SQL to them."""
        task.prompt = self._write(task.question, task.tables, task.hits, task.ranked)
        task.grammar = await self._grammar(task.tables, self.connector.dialect)
        return
        yield  # an async generator that emits nothing

    async def generate(self, task: SQLTask) -> AsyncIterator[dict[str, Any]]:
        """The candidates: each written, guarded, run read-only and corrected on a database error."""
        assert task.prompt is not None, "write_prompt runs before generate"
        dialect, n = self.connector.dialect, max(1, self.options.candidates)
        if n == 1:
            task.candidates = [_Candidate(0)]
            async for event in self._solve(task.candidates[0], task.prompt, task.grammar, dialect):
                yield event
            return
        # Candidate 0 is the greedy answer; the others sample. They run concurrently through the
        # serving layer (which batches or queues them) and their events follow in order.
        task.candidates = [_Candidate(i) for i in range(n)]
        batches = await asyncio.gather(*(self._collect(c, task.prompt, task.grammar, dialect) for c in task.candidates))
        for events in batches:
            for event in events:
                yield event

    async def vote(self, task: SQLTask) -> AsyncIterator[dict[str, Any]]:
        """The answer: the largest group of candidates whose results agree."""
        answer = task.answer
        self._settle(answer, task.candidates)
        if len(task.candidates) > 1:
            yield {"type": "vote", **answer.vote}
        if answer.ok:
            yield {"type": "sql", "sql": answer.sql}
        task.done = True

    def finish(self, task: SQLTask) -> None:
        """The time taken, and the thoughts and chart of the chosen candidate's answer."""
        answer = task.answer
        answer.elapsed_ms = (time.perf_counter() - task.started) * 1000
        if answer.attempts:
            # The chosen candidate's answer (its last attempt) carries the thoughts and chart.
            last = next((a for a in reversed(answer.attempts) if a.sql == answer.sql), answer.attempts[-1])
            parsed = parse_answer(last.raw) if self.options.style == "chat" else None
            if parsed is not None:
                answer.thoughts, answer.chart = parsed.thoughts, parsed.chart

    async def _link(self, question: str, schema: list[TableInfo], hits: list[ValueHit]) -> list[TableInfo]:
        return await self.linker.select(question, schema, must={h.table for h in hits})  # + the values'

    def _write(
        self,
        question: str,
        tables: list[TableInfo],
        hits: list[ValueHit],
        ranked: list[tuple[StoredExample, float]],
    ) -> str | list[Message]:
        """The prompt for ``question`` over ``tables``. A model trained on this database (``trained``)
        reads the schema without samples or worked examples, as it was trained."""
        opts, dialect = self.options, self.connector.dialect
        examples: list[Example] | None
        if opts.trained:
            examples = []
        else:
            examples = self._examples(question, tables, dialect)
            close = verified_examples(ranked, opts.example_threshold, k=2)
            if close:  # the verified ones last, nearest the question
                examples = [*(examples or [])[len(close) :], *close]
        hint_lines = [h.condition(dialect) for h in hits]
        samples = not opts.trained
        if opts.style == "chat":
            return chat_messages(question, tables, dialect, examples, hint_lines, samples)
        return completion_prompt(question, tables, dialect, examples, hint_lines, samples)

    async def _prompt(
        self,
        question: str,
        schema: list[TableInfo],
        hits: list[ValueHit],
        ranked: list[tuple[StoredExample, float]],
    ) -> tuple[list[TableInfo], str | list[Message]]:
        """The linked tables and the prompt for ``question``."""
        tables = await self._link(question, schema, hits)
        return tables, self._write(question, tables, hits, ranked)

    async def prompt_for(self, question: str) -> str | list[Message]:
        """The prompt the pipeline writes for ``question`` (value hints and linking included): what a
        model is trained on, so that it later reads exactly what it learnt from."""
        schema = await self.schema()
        g = self.grounding
        hits = g.hits(question) if g is not None and self.options.values else []
        return (await self._prompt(question, schema, hits, []))[1]

    async def _collect(
        self, cand: _Candidate, prompt: str | list[Message], grammar: str | None, dialect: str
    ) -> list[dict[str, Any]]:
        return [event async for event in self._solve(cand, prompt, grammar, dialect)]

    async def _solve(
        self, cand: _Candidate, prompt: str | list[Message], grammar: str | None, dialect: str
    ) -> AsyncIterator[dict[str, Any]]:
        """One candidate: ask, read, guard, run; a failed query goes back to the model with the
        database's error, at most ``max_corrections`` times. A write is never retried."""
        opts = self.options
        for round_ in range(opts.max_corrections + 1):
            sampled = cand.index > 0
            raw, constrained = await self._ask(prompt, grammar, seed=cand.index if sampled else None)
            grammar = grammar if constrained else None
            attempt = self._read(raw)
            attempt.constrained, attempt.candidate = constrained, cand.index
            cand.attempts.append(attempt)
            event = {"type": "attempt", "round": round_, "candidate": cand.index}
            if attempt.sql is None:
                attempt.error, attempt.code = "no SQL found in the model's answer", "no_sql"
                cand.sql, cand.error = None, SQLSyntaxError("the model's answer contained no SQL query", code="no_sql")
            else:
                cand.sql = attempt.sql
                try:
                    check_read_only(attempt.sql, dialect)
                    cand.result = await self.connector.run(attempt.sql, opts.row_limit, opts.timeout_s)
                    cand.error = None
                except (UnsafeSQLError, QueryTimeoutError) as exc:  # never retried
                    attempt.error, attempt.code, cand.error = exc.message, exc.code, exc
                    yield {**event, **attempt.to_dict()}
                    return
                except (SQLSyntaxError, QueryError) as exc:
                    attempt.error, attempt.code, cand.error = exc.message, exc.code, exc
                else:
                    yield {**event, **attempt.to_dict()}
                    return
            yield {**event, **attempt.to_dict()}
            if isinstance(prompt, str):
                prompt = completion_correction(prompt, attempt.sql or raw.strip() or "SELECT", attempt.error or "")
            else:
                prompt = chat_correction(prompt, raw, attempt.error or "")

    def _settle(self, answer: SQLAnswer, found: list[_Candidate]) -> None:
        """The answer from the candidates: the largest group of those whose results agree (ties: a
        result with rows over an empty one, then the group holding the earliest candidate, the greedy
        answer first). Without any result, the first candidate's error (a refused write first)."""
        for c in found:
            answer.attempts.extend(c.attempts)
        groups: dict[tuple[Any, ...], list[_Candidate]] = {}
        for c in found:
            if c.result is not None:
                groups.setdefault(_signature(c.result), []).append(c)
        if groups:
            best = max(groups.values(), key=lambda g: (len(g), bool(g[0].result and g[0].result.rows), -g[0].index))
            winner = best[0]
            answer.sql, answer.result, answer.error = winner.sql, winner.result, None
            answer.confidence = len(best) / len(found)
        else:
            failed = next((c for c in found if isinstance(c.error, UnsafeSQLError)), found[0])
            answer.sql, answer.error = failed.sql, failed.error
            answer.confidence = 0.0
        answer.vote = {
            "candidates": len(found),
            "executed": sum(len(g) for g in groups.values()),
            "groups": sorted((len(g) for g in groups.values()), reverse=True),
            "agreement": round(answer.confidence, 4),
            "chosen": None if not groups else answer.sql,
        }

    async def _reuse(self, found: Reuse, answer: SQLAnswer, dialect: str) -> bool:
        """Run a verified example's SQL for fresh data; ``False`` (generate instead) when it fails now."""
        try:
            check_read_only(found.sql, dialect)
            result = await self.connector.run(found.sql, self.options.row_limit, self.options.timeout_s)
        except DataPilotError as exc:
            log.warning("verified SQL of example %s no longer runs (%s): generating", found.example_id, exc.message)
            return False
        answer.sql, answer.result, answer.error, answer.reused, answer.confidence = found.sql, result, None, found, 1.0
        return True

    def _examples(self, question: str, tables: list[TableInfo], dialect: str) -> list[Example] | None:
        """The worked examples for this question: the caller's, else the closest of the schema's pool
        (``None``: the prompt writes its fixed ones)."""
        opts = self.options
        if opts.examples is not None or not opts.pick_examples:
            return opts.examples
        key = tuple(t.name for t in tables)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = example_pool(tables, opts.source_dialect or dialect)
        return pick_examples(question, pool, opts.shots) or None

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

    async def _ask(
        self, prompt: str | list[Message], grammar: str | None = None, *, seed: int | None = None
    ) -> tuple[str, bool]:
        """The model's answer, and whether ``grammar`` constrained it; ``seed``: a sampled candidate."""
        opts = self.options
        # Greedy and unseeded: llama.cpp then reuses the cached schema prefix across questions.
        temperature = opts.temperature if seed is None else max(opts.temperature, opts.sample_temperature)
        params = SamplingParams(max_tokens=opts.max_tokens, temperature=temperature, repeat_penalty=1.0, seed=seed)
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
