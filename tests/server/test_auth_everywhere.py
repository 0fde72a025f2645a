"""With API keys configured, every route of the server answers 401 without one: the OpenAI API, the
admin and app APIs, the cache (ModelCache's own error shape on /modelcache), the controller, AWEL
triggers and uploads. Walks the route table, so a route added later without authentication fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datapilot.core.config import ModelConfig, Settings
from datapilot.server.roles import standalone_app

KEY = "sk-test-everywhere"
HASHED = {"kind": "hash"}
# Answer without a key by design: the load balancer's probe, the UI's files (it asks for the key), the
# API's own documentation.
PUBLIC = {"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
# Public unless ``server.public_metrics = false`` (test_metrics_are_public_unless_configured).
PUBLIC |= {"/metrics"}


def settings(home: Path, **server: object) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "models": [ModelConfig(name="echo", backend="scripted")],
            "server": {"api_keys": [KEY], **server},
            "cache": {"enabled": True, "embedders": {"default": HASHED}},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED},
        }
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    cfg = settings(tmp_path_factory.mktemp("auth"))
    app = standalone_app(cfg)
    with TestClient(app) as c:
        yield c


def routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI schema, path parameters filled in, and the /api/v1 aliases of
    the OpenAI routes (kept out of the schema)."""
    paths = client.get("/openapi.json").json()["paths"]
    out = []
    for path, ops in paths.items():
        if path in PUBLIC:
            continue
        filled = re.sub(r"\{[^}]+\}", "x", path)
        methods = sorted(m.upper() for m in ops if m in {"get", "post", "put", "patch", "delete"})
        out += [(m, filled) for m in methods]
        if filled.startswith("/v1/"):
            out += [(m, "/api" + filled) for m in methods]
    return out


def test_every_route_refuses_a_request_without_a_key(client: TestClient) -> None:
    walked = routes(client)
    assert len(walked) > 80  # the whole table, not a few routes
    prefixes = {"/v1", "/api/v1", "/api/cache", "/modelcache", "/api/controller", "/api/models", "/api/knowledge"}
    assert all(any(p.startswith(prefix) for _, p in walked) for prefix in prefixes)
    open_routes = []
    for method, path in walked:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = client.request(method, path, headers=headers, json={})
            if resp.status_code != 401:
                open_routes.append((method, path, headers, resp.status_code))
    assert not open_routes, open_routes


def test_errors_come_in_each_api_s_own_shape(client: TestClient) -> None:
    openai = client.post("/v1/chat/completions", json={"model": "echo", "messages": []})
    assert openai.status_code == 401 and openai.json()["error"]["code"] == "missing_api_key"
    modelcache = client.post("/modelcache", json={"type": "query", "scope": {"model": "echo"}, "query": []})
    assert modelcache.status_code == 401
    body = modelcache.json()
    assert body["errorCode"] == 401 and "API key" in body["errorDesc"] and body["cacheHit"] is False


def test_the_key_opens_every_route(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    refused = [
        (method, path)
        for method, path in routes(client)
        if client.request(method, path, headers=auth, json={}).status_code == 401
    ]
    assert not refused, refused
    done = client.post(
        "/v1/chat/completions", headers=auth, json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert done.status_code == 200 and done.json()["choices"][0]["message"]["content"] == "You said: hi"


def test_metrics_are_public_unless_configured(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/metrics").status_code == 200
    cfg = settings(tmp_path, public_metrics=False)
    with TestClient(standalone_app(cfg)) as closed:
        assert closed.get("/metrics").status_code == 401
        assert closed.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_the_controller_wants_the_cluster_token(tmp_path: Path) -> None:
    from datapilot.models.cluster.client import HttpControllerClient
    from datapilot.server.roles import controller_app

    cfg = Settings.model_validate({"home": tmp_path, "cluster": {"token": "cluster-secret"}})
    info = {"instance_id": "w/echo", "model": "echo", "worker_id": "w", "url": "http://127.0.0.1:1/v1"}
    with TestClient(controller_app(cfg, persist=False)) as c:
        assert c.post("/api/controller/register", json=info).status_code == 401
        assert c.get("/api/controller/instances").status_code == 401
        ok = c.post("/api/controller/register", json=info, headers={"Authorization": "Bearer cluster-secret"})
        assert ok.status_code == 200
    # A worker (or API server) started with these settings sends it.
    from datapilot.server.deps import cluster_token

    client = HttpControllerClient("http://127.0.0.1:1", token=cluster_token(cfg))
    assert client._http.headers["Authorization"] == "Bearer cluster-secret"
