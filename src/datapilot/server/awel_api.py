"""AWEL over HTTP: the flows REST API and the mounted triggers, under ``/api/v1/awel``.

* ``GET /flows``: loaded flows (and files that failed to load, with the reason);
* ``GET /flows/{name}``: the flow's JSON graph and its Mermaid diagram;
* ``POST /flows/{name}/run``: run with ``{"input": ...}``, answer ``{"result": ...}``;
* ``/trigger/<endpoint>``: each ``HttpTrigger``; bodies are validated (400 naming each field),
  streaming flows answer server-sent events ending with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from datapilot.awel import SKIPPED, DAGManager, FlowInputError, FlowResources, to_jsonable
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError
from datapilot.server.openai_api import ClientDisconnected, require_api_key, until_disconnect
from datapilot.server.state import services

log = logging.getLogger("datapilot.server")
_CLIENT_CLOSED = 499


def build_flow_manager(settings: Settings, client: Any) -> DAGManager:
    """The server's DAG manager over the model manager and the configured in-memory stores."""
    resources = FlowResources.embedded(client, settings.awel.vector_stores, settings.awel.databases)
    return DAGManager(resources)


async def load_flows(settings: Settings, manager: DAGManager | None) -> None:
    """Load the configured flows folder; call once the models are started (flows are checked against them)."""
    if manager is not None and settings.awel.flows_dir is not None:
        loaded = await manager.load_dir(settings.awel.flows_dir)
        log.info("loaded %d flow(s) from %s", len(loaded), settings.awel.flows_dir)


class RunFlowRequest(BaseModel):
    input: Any = None


def _manager(request: Request) -> DAGManager:
    mgr = services(request).awel
    if mgr is None:
        raise DataPilotError("workflows are not enabled on this server")
    return mgr


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(to_jsonable(obj), ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _events(stream: Any) -> AsyncIterator[str]:
    try:
        if hasattr(stream, "__aiter__"):
            async for chunk in stream:
                yield _sse(chunk)
        elif stream is not SKIPPED and stream is not None:
            yield _sse(stream)
    except DataPilotError as e:
        yield _sse(e.to_dict())
    except Exception as e:  # the status line is gone: report in-band, then end the stream properly
        log.exception("flow stream failed")
        yield _sse({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})
    yield "data: [DONE]\n\n"


async def _body(request: Request) -> Any:
    if request.method == "GET":
        return dict(request.query_params)
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise FlowInputError(
            f"the request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
            [{"loc": [], "msg": e.msg, "type": "json_invalid"}],
        ) from None


def build_awel_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/flows")
    async def list_flows(request: Request) -> dict[str, Any]:
        mgr = _manager(request)
        return {
            "object": "list",
            "data": [f.to_dict() for f in mgr.list()],
            "errors": [{"source": k, "message": v} for k, v in sorted(mgr.errors.items())],
        }

    @router.get("/flows/{name}")
    async def show_flow(name: str, request: Request) -> dict[str, Any]:
        mgr = _manager(request)
        dag = mgr.get(name)
        return {**mgr.info(name).to_dict(), "graph": dag.to_dict(), "mermaid": dag.to_mermaid()}

    @router.post("/flows/{name}/run")
    async def run_flow(name: str, body: RunFlowRequest, request: Request) -> Response:
        dag = _manager(request).get(name)
        try:
            result = await until_disconnect(request, dag.run_raw(body.input))
        except ClientDisconnected:
            return Response(status_code=_CLIENT_CLOSED)
        if hasattr(result, "__aiter__"):
            return StreamingResponse(_events(result), media_type="text/event-stream")
        return JSONResponse({"flow": name, "result": None if result is SKIPPED else to_jsonable(result)})

    @router.api_route("/trigger/{endpoint:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def trigger(endpoint: str, request: Request) -> Response:
        dag, trig = _manager(request).route(endpoint, request.method)
        data = trig.parse(await _body(request))
        try:
            result = await until_disconnect(request, dag.run_raw(data))
        except ClientDisconnected:
            return Response(status_code=_CLIENT_CLOSED)
        if trig.streaming_response:
            return StreamingResponse(_events(result), media_type="text/event-stream")
        if result is SKIPPED:
            raise DataPilotError(f"flow {dag.name!r} gave no answer: its end node {dag.end_node().name!r} was skipped")
        if hasattr(result, "__aiter__"):
            return StreamingResponse(_events(result), media_type="text/event-stream")
        return JSONResponse(to_jsonable(result))

    return router
