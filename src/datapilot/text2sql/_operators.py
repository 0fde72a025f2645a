"""Text-to-SQL as AWEL operators: ``text2sql_ground`` -> ``text2sql_link`` -> ``text2sql_prompt``
-> ``text2sql_generate`` -> ``text2sql_vote``, one per stage of ``Text2SQL``.

``text2sql_ground`` takes a datasource ``Connection`` and makes the ``SQLTask`` the others pass on;
the pipeline for it comes from the flow's resources (``Text2SQLEnv.text2sql``: the model client, the
source's schema linker and grounding, the options). Each stage sends its progress as ``step`` events
(``ctx.emit``); a task that needs no more stages (a verified SQL answered it) passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Protocol

from datapilot.awel import BaseOperator, CallContext, register_operator
from datapilot.core.errors import ConfigError
from datapilot.core.events import Event, StepEvent
from datapilot.datasource import Connection, Connector
from datapilot.text2sql._pipeline import SQLAnswer, SQLTask, Text2SQL


class Text2SQLEnv(Protocol):
    """What the operators need from the flow's resources: a pipeline for a source and a model."""

    def text2sql(self, connector: Connector, source: str, model: str | None, style: str) -> Text2SQL: ...


def step_event(event: dict[str, Any]) -> Event | None:
    """A pipeline event as the step a chat client sees (``None``: not shown; ``sql`` is the scene's)."""
    kind = event["type"]
    if kind == "attempt":
        keep = ("round", "candidate", "sql", "error")
        return StepEvent(name="attempt", **{k: event[k] for k in keep})
    if kind == "tables":
        return StepEvent(name="schema", tables=event["tables"])
    if kind == "values":
        return StepEvent(name="values", hits=event["hits"])
    if kind in ("reuse", "vote"):
        return StepEvent(name=kind, **{k: v for k, v in event.items() if k != "type"})
    return None


class _Stage(BaseOperator):
    """One stage of the pipeline over an ``SQLTask``; a finished task passes through."""

    accepts: ClassVar[tuple[Any, ...]] = (SQLTask,)
    produces = SQLTask
    stage: ClassVar[str]  # the ``Text2SQL`` method this operator runs

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        task: SQLTask = inputs[0]
        if task.done or task.pipeline is None:
            return task
        run: Callable[[SQLTask], AsyncIterator[dict[str, Any]]] = getattr(task.pipeline, self.stage)
        try:
            async for event in run(task):
                shown = step_event(event)
                if shown is not None:
                    ctx.emit(shown)
        finally:
            if task.done:
                task.pipeline.finish(task)
        return task


@register_operator("text2sql_ground")
class GroundOperator(_Stage):
    """A ``Connection`` -> the ``SQLTask``: the schema, the question's real values and verified examples
    (a verified SQL that answers the question finishes the task here). Emits ``step text2sql`` first."""

    node_name, stage = "ground", "ground"
    accepts = (Connection,)

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        conn: Connection = inputs[0]
        env = ctx.resources
        if env is None or not callable(getattr(env, "text2sql", None)):
            raise ConfigError(f"node {self.name!r} needs a text-to-SQL environment (resources with text2sql())")
        request = conn.request
        model = getattr(request, "model", None)
        pipeline: Text2SQL = env.text2sql(conn.connector, conn.source, model, getattr(request, "style", "completion"))
        task = SQLTask(conn.question, SQLAnswer(conn.question), pipeline, conn.source, notes=conn.notes)
        ctx.emit(StepEvent(name="text2sql", datasource=conn.source, model=pipeline.model))
        return await super().execute([task], ctx)


@register_operator("text2sql_link")
class LinkOperator(_Stage):
    """The tables the question needs, with the join paths between them (``step schema``)."""

    node_name, stage = "link", "link"


@register_operator("text2sql_prompt")
class PromptOperator(_Stage):
    """The prompt over the linked tables, and the grammar holding the SQL to them."""

    node_name, stage = "prompt", "write_prompt"


@register_operator("text2sql_generate")
class GenerateOperator(_Stage):
    """The candidates, each written by the model, guarded, executed read-only and corrected on a
    database error (``step attempt`` per answer)."""

    node_name, stage = "generate", "generate"


@register_operator("text2sql_vote")
class VoteOperator(_Stage):
    """The answer: the largest group of candidates whose results agree (``step vote``)."""

    node_name, stage = "vote", "vote"
