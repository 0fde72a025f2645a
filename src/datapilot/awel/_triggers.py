"""Triggers: where a call's data comes from. ``HttpTrigger`` is mounted by the server under
``/api/v1/awel/trigger/<endpoint>``; ``IteratorTrigger`` runs a DAG over an iterable for batch jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from datapilot.awel._errors import DAGError, FlowInputError, SerializationError
from datapilot.awel._operators import TriggerOperator, _aiter
from datapilot.awel._registry import SCHEMAS, register_operator

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _field_errors(exc: ValidationError) -> list[dict[str, object]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors(include_url=False)
    ]


@register_operator("http_trigger", "http_source")
class HttpTrigger(TriggerOperator):
    """Runs the DAG for HTTP requests to ``/api/v1/awel/trigger/<endpoint>``.

    ``request_body``: a pydantic model the JSON body is validated into (errors are 400s naming each
    field), or ``dict`` (any JSON object; for GET, the query parameters). ``streaming_response``:
    the end node yields a stream, sent as server-sent events ending with ``data: [DONE]``.
    """

    def __init__(
        self,
        endpoint: str,
        methods: str | list[str] = "POST",
        request_body: type[BaseModel] | type[dict[str, Any]] | str | None = None,
        streaming_response: bool = False,
        *,
        method: str | None = None,
        **kw: Any,
    ) -> None:
        if not endpoint or not isinstance(endpoint, str):
            raise DAGError("HttpTrigger needs an endpoint such as '/examples/rag'")
        self.endpoint = "/" + endpoint.strip("/")
        chosen = [method] if method else [methods] if isinstance(methods, str) else list(methods)
        self.methods = [m.upper() for m in chosen]
        bad = [m for m in self.methods if m not in HTTP_METHODS]
        if bad:
            raise DAGError(f"HttpTrigger {self.endpoint}: unknown HTTP method(s) {bad}; use {', '.join(HTTP_METHODS)}")
        if isinstance(request_body, str):
            request_body = None if request_body == "dict" else SCHEMAS.get(request_body)
        if request_body is dict:
            request_body = None
        if request_body is not None and not (isinstance(request_body, type) and issubclass(request_body, BaseModel)):
            raise DAGError("HttpTrigger request_body must be a pydantic model class or dict")
        self.request_body: type[BaseModel] | None = request_body
        self.streaming_response = streaming_response
        super().__init__(**kw)

    node_name = "http_trigger"

    def output_type(self) -> Any:
        return self.request_body or dict[str, Any]

    def parse(self, body: Any) -> Any:
        """Validate a decoded JSON body (or query parameters) into the DAG's call data."""
        if self.request_body is None:
            if not isinstance(body, dict):
                raise FlowInputError(
                    "the request body must be a JSON object",
                    [{"loc": [], "msg": "expected an object", "type": "dict_type"}],
                )
            return body
        try:
            return self.request_body.model_validate(body)
        except ValidationError as exc:
            details = _field_errors(exc)
            first = details[0]
            param = ".".join(str(p) for p in first["loc"]) or None  # type: ignore[attr-defined]
            where = f"'{param}'" if param else "the request body"
            extra = len(details) - 1
            more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
            raise FlowInputError(f"invalid value for {where}: {first['msg']}{more}", details, param) from None

    def params(self) -> dict[str, Any]:
        body = None
        if self.request_body is not None:
            body = SCHEMAS.name_of(self.request_body)
            if body is None:
                raise SerializationError(
                    f"request body {self.request_body.__name__} is not registered; decorate it with @register_schema()"
                )
        out: dict[str, Any] = {"endpoint": self.endpoint, "methods": self.methods}
        if body:
            out["request_body"] = body
        if self.streaming_response:
            out["streaming_response"] = True
        return out


def HttpSource(endpoint: str, method: str = "post", **kw: Any) -> HttpTrigger:
    """``HttpTrigger`` spelled as in the fluent frame and the DSL's ``http_source(...)``."""
    return HttpTrigger(endpoint, method=method, **kw)


Progress = Callable[[int, int], None]


@register_operator("iterator_trigger")
class IteratorTrigger(TriggerOperator):
    """Runs the DAG once per item of an iterable, ``max_concurrency`` calls at a time, for batch jobs.

    ``await trigger.trigger()`` returns the results in input order; ``progress(done, total)`` is
    called after each item (the CLI draws a bar with it).
    """

    def __init__(self, data: Iterable[Any] | AsyncIterable[Any] | None = None, max_concurrency: int = 4, **kw: Any):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.data = data
        self.max_concurrency = max_concurrency
        super().__init__(**kw)

    node_name = "iterator_trigger"

    async def trigger(
        self,
        items: Iterable[Any] | AsyncIterable[Any] | None = None,
        *,
        progress: Progress | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        if self.dag is None:
            raise DAGError(f"trigger {self.describe()} is in no DAG")
        source = items if items is not None else self.data
        if source is None:
            raise ValueError(f"trigger {self.name!r} has no data: pass items=")
        return await run_batch(self.dag, source, self.max_concurrency, progress, return_exceptions)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_concurrency": self.max_concurrency}
        if isinstance(self.data, list | tuple):
            out["data"] = list(self.data)
        return out


async def run_batch(
    dag: Any,
    items: Iterable[Any] | AsyncIterable[Any],
    max_concurrency: int = 4,
    progress: Progress | None = None,
    return_exceptions: bool = False,
) -> list[Any]:
    """Run ``dag`` once per item, ``max_concurrency`` at a time; results in input order."""
    values = [v async for v in _aiter(items)]
    total, done = len(values), 0
    results: list[Any] = [None] * total
    gate = asyncio.Semaphore(max_concurrency)

    async def one(i: int, value: Any) -> None:
        nonlocal done
        async with gate:
            try:
                results[i] = await dag.run(value)
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc
        done += 1
        if progress is not None:
            progress(done, total)

    try:
        async with asyncio.TaskGroup() as group:
            for i, v in enumerate(values):
                group.create_task(one(i, v))
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None
    return results
