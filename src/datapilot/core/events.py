"""The events a chat scene, a knowledge answer or an agent team streams: one typed union.

Every stream the server sends (``POST /api/chat``, knowledge chat, agent runs, flows) is a sequence
of these, written as SSE by one writer (``data: {json}`` per event, then ``data: [DONE]``). Each event
is a pydantic model with a literal ``type``; ``ChatEvent`` is their discriminated union, so the
OpenAPI schema documents every shape. Events keep extra fields: a step says what it did in its own
words (``{"type": "step", "name": "vote", "agreement": 0.67, ...}``).

``wire()`` gives the JSON object sent to clients: the fields that were set, nothing added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from datapilot.core.errors import DataPilotError


class Event(BaseModel):
    """The common base: a ``type`` and any extra fields the producer adds."""

    model_config = ConfigDict(extra="allow")

    type: str

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_fields_set__.add("type")  # the type is always on the wire, given or defaulted

    def wire(self) -> dict[str, Any]:
        """The JSON object clients receive: the fields that were given, in the order given."""
        return self.model_dump(exclude_unset=True)


class StepEvent(Event):
    """Progress: a named step of a scene (``schema``, ``values``, ``attempt``, ``vote``, ``plan``...)."""

    type: Literal["step"] = "step"
    name: str


class SQLEvent(Event):
    type: Literal["sql"] = "sql"
    sql: str | None


class TableEvent(Event):
    """A query result: columns, rows (JSON values) and whether the row limit cut it."""

    type: Literal["table"] = "table"
    columns: list[str]
    rows: list[list[Any]]


class ChartEvent(Event):
    """A chart for a table: DataPilot's chart spec and the same chart as Vega-Lite."""

    type: Literal["chart"] = "chart"
    spec: dict[str, Any]
    vega_lite: dict[str, Any]


class TextEvent(Event):
    """A piece of the answer's text as the model writes it."""

    type: Literal["text"] = "text"
    delta: str


class SchemaEvent(Event):
    """``db_qa``: the tables the question is about."""

    type: Literal["schema"] = "schema"
    datasource: str
    tables: list[dict[str, Any]]


class ColumnsEvent(Event):
    """``excel``: each loaded table's columns, cleaned and described."""

    type: Literal["columns"] = "columns"
    datasource: str
    tables: dict[str, list[dict[str, Any]]]


class AnalysisEvent(Event):
    """``dashboard``: one analysis (title, SQL, and its table and chart, or its error)."""

    type: Literal["analysis"] = "analysis"
    index: int
    title: str


class CitationsEvent(Event):
    """``knowledge``: the numbered passages the model is given, before it answers."""

    type: Literal["citations"] = "citations"


class DeltaEvent(Event):
    """``knowledge``: a piece of the answer's text."""

    type: Literal["delta"] = "delta"


class AgentEvent(Event):
    """An agent team's run: its plan, each step, messages, tool calls and results, and the report."""

    type: Literal[
        "start",
        "plan",
        "step_start",
        "message",
        "tool_call",
        "tool_result",
        "observation",
        "step_done",
        "note",
        "review",
        "report",
        "budget",
    ]


class ErrorBody(BaseModel):
    """The error shape every API of DataPilot shares (OpenAI's): message, type, code, param."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    code: str | int | None = None
    param: str | None = None


class ErrorEvent(Event):
    """Something failed after the stream began; ``done`` still follows where the scene can end."""

    type: Literal["error"] = "error"
    error: ErrorBody


class DoneEvent(Event):
    """The last event: the whole answer, as the non-streaming call returns it.

    A scene's answer is an object; the knowledge chat's is the answer's text (its citations travel
    beside it); an agent run that failed has none (``null``)."""

    type: Literal["done"] = "done"
    answer: dict[str, Any] | str | None = Field(default_factory=dict)


ChatEvent = Annotated[
    StepEvent
    | SQLEvent
    | TableEvent
    | ChartEvent
    | TextEvent
    | SchemaEvent
    | ColumnsEvent
    | AnalysisEvent
    | CitationsEvent
    | DeltaEvent
    | AgentEvent
    | ErrorEvent
    | DoneEvent,
    Field(discriminator="type"),
]
"""Any event of any DataPilot stream, told apart by ``type``."""

CHAT_EVENTS: TypeAdapter[ChatEvent] = TypeAdapter(ChatEvent)


def parse_event(data: dict[str, Any]) -> Event:
    """A wire event back as its typed model (clients, tests); an unknown ``type`` is an error."""
    event: Event = CHAT_EVENTS.validate_python(data)
    return event


def error_event(error: dict[str, Any]) -> ErrorEvent:
    """The error event for an error body (``DataPilotError.to_dict()["error"]``)."""
    return ErrorEvent(error=ErrorBody.model_validate(error))


def as_event(data: Mapping[str, Any]) -> Event:
    """A producer's event dict as its typed model, for the SSE writer; one whose ``type`` no model
    knows (a plugin's own event) or that does not fit its model stays a plain ``Event`` with the same
    fields, so nothing a producer sends is lost or altered on the wire."""
    try:
        return parse_event(dict(data))
    except ValidationError:
        return Event.model_validate(data)


INTERNAL_ERROR: dict[str, Any] = {
    "message": "internal error; the server log has the details",
    "type": "server_error",
    "code": "internal_error",
    "param": None,
}
"""The body of an error that is not a ``DataPilotError``: what failed stays in the log, not on the wire."""


def exception_event(exc: BaseException) -> ErrorEvent:
    """The error event for an exception: a ``DataPilotError``'s own body, else ``INTERNAL_ERROR``."""
    body = exc.to_dict()["error"] if isinstance(exc, DataPilotError) else INTERNAL_ERROR
    return ErrorEvent(error=ErrorBody.model_validate(body))
