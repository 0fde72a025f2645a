"""AWEL over HTTP: the flows REST API and the mounted triggers, under ``/api/v1/awel``.

* ``GET /flows``: loaded flows (and, for an admin, files that failed to load, with the reason);
* ``GET /flows/{name}``: the flow's JSON graph and its Mermaid diagram;
* ``POST /flows/{name}/run``: run with ``{"input": ...}``, answer ``{"result": ...}``;
* ``/trigger/<endpoint>``: each ``HttpTrigger``; bodies are validated (400 naming each field),
  streaming flows answer server-sent events ending with ``data: [DONE]``.

Flows from the configured folder are shared by every tenant; a key's ``flows`` scopes limit which it
may run (403). A tenant's own flow is invisible to the others (404, as a missing one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from datapilot.awel import SKIPPED, DAGManager, FlowInputError, FlowResources, to_jsonable
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError
from datapilot.core.tenancy import current_principal, require_scope
from datapilot.retrieval import InMemoryVectorIndex
from datapilot.server.deps import (
    CLIENT_CLOSED,
    ClientDisconnected,
    access,
    flow_manager,
    require_api_key,
    until_disconnect,
)
from datapilot.server.sse import sse_response

log = logging.getLogger("datapilot.server")
TRIGGER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def build_flow_manager(settings: Settings, client: Any, *, cache: Any = None) -> DAGManager:
    """The server's DAG manager over ``client`` (the cache-aware one) and the configured stores;
    ``cache`` (the server's semantic cache client) is the flows' ``default`` cache."""
    resources = FlowResources.embedded(client, settings.awel.vector_stores, index_factory=InMemoryVectorIndex)
    if cache is not None:
        resources.caches["default"] = cache
    return DAGManager(resources)


async def load_flows(settings: Settings, manager: DAGManager | None) -> None:
    """Load the configured flows folder; call once the models are started (flows are checked against them)."""
    if manager is not None and settings.awel.flows_dir is not None:
        loaded = await manager.load_dir(settings.awel.flows_dir)
        log.info("loaded %d flow(s) from %s", len(loaded), settings.awel.flows_dir)


class RunFlowRequest(BaseModel):
    input: Any = None


async def _chunks(result: Any) -> AsyncIterator[Any]:
    """A flow's answer as stream events: each chunk of a stream, else the one value (none if skipped)."""
    if hasattr(result, "__aiter__"):
        async for chunk in result:
            yield to_jsonable(chunk)
    elif result is not SKIPPED and result is not None:
        yield to_jsonable(result)


def _stream(request: Request, result: Any) -> Response:
    return sse_response(request, _chunks(result))


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
        mgr = flow_manager(request)
        # Load failures name the server's files: the admins' to fix, not the tenants' to see.
        errors = sorted(mgr.errors.items()) if current_principal().is_admin else []
        return {
            "object": "list",
            "data": [f.to_dict() for f in mgr.list()],
            "errors": [{"source": k, "message": v} for k, v in errors],
        }

    @router.get("/flows/{name}")
    async def show_flow(name: str, request: Request) -> dict[str, Any]:
        mgr = flow_manager(request)
        dag = mgr.get(name)
        return {**mgr.info(name).to_dict(), "graph": dag.to_dict(), "mermaid": dag.to_mermaid()}

    @router.post("/flows/{name}/run", openapi_extra=access("use"))
    async def run_flow(name: str, body: RunFlowRequest, request: Request) -> Response:
        dag = flow_manager(request).get(name)
        require_scope("flows", dag.name)
        try:
            result = await until_disconnect(request, dag.run_raw(body.input))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)
        if hasattr(result, "__aiter__"):
            return _stream(request, result)
        return JSONResponse({"flow": name, "result": None if result is SKIPPED else to_jsonable(result)})

    async def trigger(endpoint: str, request: Request) -> Response:
        """Run the flow whose ``HttpTrigger`` serves this endpoint and method."""
        dag, trig = flow_manager(request).route(endpoint, request.method)
        require_scope("flows", dag.name)
        data = trig.parse(await _body(request))
        try:
            result = await until_disconnect(request, dag.run_raw(data))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)
        if trig.streaming_response:
            return _stream(request, result)
        if result is SKIPPED:
            raise DataPilotError(f"flow {dag.name!r} gave no answer: its end node {dag.end_node().name!r} was skipped")
        if hasattr(result, "__aiter__"):
            return _stream(request, result)
        return JSONResponse(to_jsonable(result))

    for method in TRIGGER_METHODS:  # one route per method: each its own OpenAPI operation
        router.add_api_route(
            "/trigger/{endpoint:path}", trigger, methods=[method], operation_id=f"awel_trigger_{method.lower()}"
        )
    return router
