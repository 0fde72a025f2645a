"""Every error leaves the server in OpenAI's error shape with the status that fits it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from datapilot.core.errors import AuthenticationError, DataPilotError
from datapilot.server.deps import ClusterAuth, authenticate, require_api_key

log = logging.getLogger("datapilot.server")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _describe(err: dict[str, Any]) -> tuple[str, str | None]:
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    # Drop pydantic's union-member tags such as "str" / "list[str]" from the location.
    loc = [p for p in loc if not (p[:1].islower() and ("[" in p or p in {"str", "int", "float", "bool"}))]
    param = ".".join(loc) or None
    kind = err.get("type", "")
    if kind == "json_invalid":
        return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing":
        return f"Missing required parameter: '{param}'", param
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return "the request body must be a JSON object", None
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"Invalid value for '{param}': {msg}" if param else msg), param


def _answer(exc: DataPilotError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unauthenticated(request: Request) -> JSONResponse | None:
    """The 401 a request without a valid key gets from its route, or None.

    FastAPI reads and decodes the body before it runs the route's dependencies, so a body that is not
    JSON (or a form that does not parse, or one over the size limit) would be answered before the key is
    checked, telling a caller without a key how the route reads its body. Such errors go through the
    route's authentication first (the API key, or the controller's cluster token); it only reads the
    request, so running it again for an error raised after it passed changes nothing."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    try:
        for dep in getattr(dependant, "dependencies", ()):
            if dep.call is require_api_key:
                authenticate(request)
            elif isinstance(dep.call, ClusterAuth):
                await dep.call(request)
    except AuthenticationError as exc:
        return _answer(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DataPilotError)
    async def _dp(_: Request, exc: DataPilotError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return _answer(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = await _unauthenticated(request)
        if refused is not None:
            return refused
        errors = list(exc.errors())
        message, param = _describe(errors[0]) if errors else ("invalid request", None)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        refused = await _unauthenticated(request) if exc.status_code < 500 else None
        if refused is not None:
            return refused
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(
            error_body(str(exc.detail), type_), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body(f"internal error ({type(exc).__name__}); the server log has the details", "server_error"),
            status_code=500,
        )
