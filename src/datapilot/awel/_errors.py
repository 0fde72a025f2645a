"""AWEL errors. Every one is a ``DataPilotError``, so the server renders it in the usual shape."""

from __future__ import annotations

from datapilot.core.errors import ConfigError, DataPilotError, InvalidRequestError, UnknownNameError


class DAGError(ConfigError):
    """The graph is malformed: a cycle, a dangling input, a join with the wrong arity, a bad edge.

    ``problems`` lists every problem found, each naming the nodes involved.
    """

    default_code = "invalid_dag"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class PortTypeError(DAGError):
    """An edge joins a producer and a consumer whose annotated types cannot match."""

    default_code = "port_type_mismatch"


class RegistryError(UnknownNameError, ConfigError):
    """A name (operator, function, schema) is not in its registry: the allow-list for loaded flows.

    An ``UnknownNameError`` first (a 400: the flow names something that does not exist), and still a
    ``ConfigError`` for callers that catch those."""

    default_code = "unknown_name"


class SerializationError(ConfigError):
    """A DAG cannot be written as JSON (e.g. a map over a function that is not registered)."""

    default_code = "not_serialisable"


class FlowLoadError(ConfigError):
    """A flow cannot be loaded: unreadable file, or it names a model or store that is not configured."""

    default_code = "flow_load_failed"


class DSLError(ConfigError):
    """A DSL syntax or name error, with the 1-based ``line`` and ``column`` where it was found."""

    default_code = "dsl_error"

    def __init__(self, message: str, line: int, column: int, expected: list[str] | None = None) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line, self.column = line, column
        self.expected = expected or []


class FlowNotFoundError(DataPilotError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "flow_not_found"


class FlowInputError(InvalidRequestError):
    """The call data does not match the trigger's request body; ``details`` holds every field problem."""

    default_code = "invalid_flow_input"

    def __init__(self, message: str, details: list[dict[str, object]], param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.details = details

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        error = body["error"]
        assert isinstance(error, dict)
        error["details"] = self.details
        return body


class NodeError(DataPilotError):
    """A node failed while a DAG ran. Keeps the status of a ``DataPilotError`` cause (a 4xx stays a 4xx)."""

    default_code = "node_failed"

    def __init__(self, dag: str, node: str, kind: str, cause: BaseException, timeout: float | None = None) -> None:
        if isinstance(cause, TimeoutError):
            detail = f"timed out after {timeout} s" if timeout is not None else "timed out"
        elif isinstance(cause, DataPilotError):
            detail = cause.message
        else:
            detail = f"{type(cause).__name__}: {cause}"
        super().__init__(f"flow {dag!r}, node {node!r} ({kind}) failed: {detail}")
        self.dag, self.node, self.kind, self.cause = dag, node, kind, cause
        if isinstance(cause, DataPilotError):
            self.status_code = cause.status_code
            self.error_type = cause.error_type
            self.code = cause.code or self.default_code
