"""Tenants' API keys: stored hashed, shown once, scoped by level, revoked at once; the principal a key
resolves to reaches every layer of the request (async and threaded code alike); the CLI and the admin
API manage them, and the official ``openai`` client works with them against a real server process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from datapilot.core.config import ModelConfig, Settings
from datapilot.core.keys import KeyStore
from datapilot.core.tenancy import current_principal
from datapilot.server.deps import require_api_key
from datapilot.server.roles import standalone_app
from datapilot.testing import start_server, write_config

HASHED = {"kind": "hash"}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def settings(home: Path, **server: object) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "models": [ModelConfig(name="echo", backend="scripted")],
            "server": server,
            "cache": {"enabled": False},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED, "sample": False},
        }
    )


def probe_router() -> APIRouter:
    """Routes that answer with the principal as the route's own code sees it: in the event loop, and in
    a worker thread (a sync route, which FastAPI runs in its thread pool)."""
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/probe/async")
    async def in_loop() -> dict[str, Any]:
        return current_principal().to_dict()

    @router.get("/probe/sync")
    def in_thread() -> dict[str, Any]:
        return current_principal().to_dict()

    return router


@pytest.fixture
def app_home(tmp_path: Path) -> Iterator[tuple[TestClient, KeyStore]]:
    cfg = settings(tmp_path)
    app = standalone_app(cfg)
    app.include_router(probe_router())
    keys = KeyStore.for_home(cfg.home)
    with TestClient(app) as client:
        yield client, keys
    keys.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_any_key_the_server_is_open_as_the_default_admin(app_home: tuple[TestClient, KeyStore]) -> None:
    client, _ = app_home
    who = client.get("/api/whoami")
    assert who.status_code == 200 and who.json()["tenant"] == "default" and who.json()["level"] == "admin"
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_the_first_key_closes_the_server_and_its_principal_reaches_every_layer(
    app_home: tuple[TestClient, KeyStore],
) -> None:
    client, keys = app_home
    record, key = keys.create("acme", name="ci", level="write", rpm=100)
    refused = client.get("/api/whoami")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    wrong = client.get("/api/whoami", headers=bearer(key[:-1] + ("A" if key[-1] != "A" else "B")))
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    for path in ("/api/whoami", "/probe/async", "/probe/sync"):
        seen = client.get(path, headers=bearer(key)).json()
        assert seen["tenant"] == "acme" and seen["level"] == "write" and seen["key_id"] == record.id, path
        assert seen["rpm"] == 100
    # The next request without a key is anonymous again: nothing leaks between requests.
    assert client.get("/probe/sync").status_code == 401


def test_levels_read_use_write_admin(app_home: tuple[TestClient, KeyStore]) -> None:
    client, keys = app_home
    _, reader = keys.create("acme", level="read")
    _, writer = keys.create("acme", level="write")
    _, admin = keys.create("ops", level="admin")
    # A read key uses models and reads; it may not create.
    assert client.post("/v1/chat/completions", headers=bearer(reader), json=CHAT).status_code == 200
    assert client.get("/api/datasources", headers=bearer(reader)).status_code == 200
    made = client.post(
        "/api/datasources", headers=bearer(reader), json={"name": "x", "kind": "sqlite", "path": "/nonexistent"}
    )
    assert made.status_code == 403 and made.json()["error"]["code"] == "insufficient_access"
    assert "write access" in made.json()["error"]["message"]
    # Only an admin manages keys and models.
    for key in (reader, writer):
        denied = client.get("/api/keys", headers=bearer(key))
        assert denied.status_code == 403 and denied.json()["error"]["type"] == "invalid_request_error"
        assert client.post("/api/models/echo/stop", headers=bearer(key)).status_code == 403
    assert client.get("/api/keys", headers=bearer(admin)).status_code == 200


def test_the_admin_api_shows_a_key_once_and_stores_only_its_hash(app_home: tuple[TestClient, KeyStore]) -> None:
    client, keys = app_home
    _, admin = keys.create("ops", level="admin")
    made = client.post(
        "/api/keys",
        headers=bearer(admin),
        json={"tenant": "acme", "name": "analysts", "level": "read", "scopes": {"models": ["echo"]}, "tpm": 5000},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    key, key_id = body["key"], body["id"]
    assert key.startswith(f"dpk_{key_id}_") and body["scopes"] == {"models": ["echo"]} and body["tpm"] == 5000
    listed = client.get("/api/keys", headers=bearer(admin), params={"tenant": "acme"}).json()["keys"]
    assert [k["id"] for k in listed] == [key_id]
    assert key not in json.dumps(listed) and "hash" not in listed[0]
    stored = b"".join(p.read_bytes() for p in keys.path.parent.glob("keys.db*"))
    assert key.encode() not in stored and key.split("_", 2)[2].encode() not in stored
    assert client.get("/api/whoami", headers=bearer(key)).json()["tenant"] == "acme"
    # Revoked: refused from the next request on; revoking twice is harmless; unknown ids are 404.
    assert client.delete(f"/api/keys/{key_id}", headers=bearer(admin)).json()["active"] is False
    assert client.get("/api/whoami", headers=bearer(key)).status_code == 401
    assert client.delete(f"/api/keys/{key_id}", headers=bearer(admin)).status_code == 200
    assert client.delete("/api/keys/000000000000", headers=bearer(admin)).status_code == 404
    assert [k["id"] for k in client.get("/api/keys", headers=bearer(admin)).json()["keys"]] != [key_id]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tenant": "no spaces allowed"}, "tenant"),
        ({"tenant": "acme", "scopes": {"tables": ["x"]}}, "scopes.tables"),
        ({"tenant": "acme", "level": "root"}, "level"),
        ({"tenant": "acme", "rpm": 0}, "rpm"),
        ({"tenant": "acme", "surprise": 1}, "surprise"),
    ],
)
def test_bad_key_requests_are_400_and_create_nothing(
    app_home: tuple[TestClient, KeyStore], body: dict[str, Any], param: str
) -> None:
    client, keys = app_home
    _, admin = keys.create("ops", level="admin")
    before = len(keys.keys(include_revoked=True))
    resp = client.post("/api/keys", headers=bearer(admin), json=body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    assert len(keys.keys(include_revoked=True)) == before


def test_expired_keys_are_refused_and_config_keys_stay_admin(tmp_path: Path) -> None:
    cfg = settings(tmp_path, api_keys=["sk-config"])
    keys = KeyStore.for_home(cfg.home)
    record, key = keys.create("acme", expires_in_s=0.05)
    time.sleep(0.1)
    with TestClient(standalone_app(cfg)) as client:
        assert client.get("/api/whoami", headers=bearer(key)).status_code == 401
        who = client.get("/api/whoami", headers=bearer("sk-config")).json()
        assert who == {**who, "tenant": "default", "level": "admin", "key_id": "config"}
        budget = client.put("/api/tenants/acme/budget", headers=bearer("sk-config"), json={"daily_tokens": 10})
        assert budget.json() == {"tenant": "acme", "daily_tokens": 10, "monthly_tokens": None}
        tenants = client.get("/api/tenants", headers=bearer("sk-config")).json()["tenants"]
        assert {"tenant": "acme", "daily_tokens": 10, "monthly_tokens": None} in tenants
    assert not record.active or keys.get(record.id).active is False
    keys.close()


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "datapilot", "keys", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_keys_work_with_the_official_client_on_a_real_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = json.loads(_cli(home, "create", "--tenant", "acme", "--name", "ci", "--level", "read", "--json"))
    key = made["key"]
    config = write_config(tmp_path / "datapilot.toml", [{"name": "echo", "backend": "scripted"}])
    srv = start_server(tmp_path, config, home, "keys")
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{srv.url}/v1", api_key="dpk_000000000000_" + "x" * 43).models.list()
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0)
        assert "echo" in [m.id for m in client.models.list()]
        answer = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "You said: hi"
        listed = _cli(home, "list", "--json")
        assert made["id"] in listed and key not in listed
        _cli(home, "revoke", made["id"])
        # The running server sees the revocation at once, and stays closed with its only key revoked.
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        client.close()
    finally:
        srv.stop()
    assert key.encode() not in b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
