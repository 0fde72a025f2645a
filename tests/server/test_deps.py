"""The routes' dependencies: typed service getters that say when a part is off, the API key check, and
cancellation of work whose client went away."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.requests import Request as StarletteRequest

from datapilot.core.config import ServerSettings, Settings
from datapilot.server.deps import (
    ClientDisconnected,
    Services,
    agent_service,
    cache_service,
    data_service,
    flow_manager,
    knowledge_service,
    require_api_key,
    scene_service,
    until_disconnect,
)
from datapilot.server.errors import install_error_handlers
from datapilot.server.metrics import ServingMetrics

GETTERS = {
    "data": (data_service, "data sources are not available on this server"),
    "cache": (cache_service, "the semantic cache is not available on this server"),
    "knowledge": (knowledge_service, "knowledge is not available on this server"),
    "agents": (agent_service, "agents are not available on this server"),
    "flows": (flow_manager, "workflows are not enabled on this server"),
    "scenes": (scene_service, "chat scenes are not available on this server"),
}


def _app(tmp_path: Path, **settings: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.services = Services(
        settings=Settings(home=tmp_path, **settings),
        llm=None,  # no route here calls a model
        metrics=ServingMetrics(),
    )
    for name, (getter, _) in GETTERS.items():

        async def route(request: Request, getter: Any = getter) -> dict[str, str]:
            return {"part": type(getter(request)).__name__}

        app.add_api_route(f"/{name}", route)
    return app


def test_each_getter_says_its_part_is_not_available_here(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path)) as client:
        for name, (_, message) in GETTERS.items():
            resp = client.get(f"/{name}")
            assert resp.status_code == 404, name
            error = resp.json()["error"]
            # The web UI shows its calm "not available" panel for exactly this sentence.
            assert error == {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "not_available",
            }


def test_getters_return_the_parts_a_server_holds(tmp_path: Path) -> None:
    app = _app(tmp_path)
    marker = object()
    app.state.services.knowledge = marker
    with TestClient(app) as client:
        assert client.get("/knowledge").json() == {"part": "object"}
        assert client.get("/data").status_code == 404


def test_a_cache_only_server_holds_its_cache_in_app_state(tmp_path: Path) -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.state.cache = "the cache"

    @app.get("/cache")
    async def route(request: Request) -> dict[str, str]:
        return {"cache": cache_service(request)}

    with TestClient(app) as client:
        assert client.get("/cache").json() == {"cache": "the cache"}


def test_api_keys_are_checked_when_configured(tmp_path: Path) -> None:
    app = _app(tmp_path, server=ServerSettings(api_keys=[SecretStr("sk-1")]))

    @app.get("/guarded")
    async def guarded(request: Request) -> dict[str, bool]:
        await require_api_key(request)
        return {"ok": True}

    with TestClient(app) as client:
        missing = client.get("/guarded")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        assert client.get("/guarded", headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get("/guarded", headers={"authorization": "Bearer sk-1"}).json() == {"ok": True}


async def test_until_disconnect_cancels_the_work_when_the_client_leaves() -> None:
    gone = asyncio.Event()
    cancelled = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def work() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    request = StarletteRequest({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    asyncio.get_running_loop().call_later(0.05, gone.set)
    with pytest.raises(ClientDisconnected):
        await until_disconnect(request, work())
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_until_disconnect_returns_the_answer_of_work_that_finishes() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def work() -> str:
        return "answer"

    request = StarletteRequest({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    assert await until_disconnect(request, work()) == "answer"
