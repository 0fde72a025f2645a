"""Model lifecycle at run time on a real all-in-one server: CLI and REST, persisted definitions."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from datapilot.testing import ServerProcess, start_server, write_config
from tests.test_cli import cli


def chat(srv: ServerProcess, model: str) -> httpx.Response:
    return httpx.post(f"{srv.v1}/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def live(srv: ServerProcess) -> list[str]:
    data = httpx.get(f"{srv.url}/api/controller/registry", timeout=5).json()
    return sorted(i["instance_id"] for i in data["instances"] if i["live"] and i["state"] == "ready")


def eventually(check, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_start_stop_restart_define_and_persist(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "datapilot.toml", [{"name": "a", "backend": "scripted"}],
                       cluster={"heartbeat_interval_s": 0.5})
    home = tmp_path / "home"
    srv = start_server(tmp_path, cfg, home, "lifecycle")
    try:
        assert live(srv) == ["local-0/a"]
        done = cli("model", "start", "a", "--url", srv.url, "--config", str(cfg))
        assert done.returncode == 0, done.stderr
        assert '"worker": "local-1"' in done.stdout
        eventually(lambda: live(srv) == ["local-0/a", "local-1/a"])
        assert chat(srv, "a").json()["choices"][0]["message"]["content"] == "You said: hi"

        resp = httpx.post(f"{srv.url}/api/models", json={"name": "b", "backend": "scripted",
                                                         "params": {"replies": ["bee"]}})
        assert resp.status_code == 201
        conflict = httpx.post(f"{srv.url}/api/models", json={"name": "a", "backend": "scripted"})
        assert conflict.status_code == 409 and "config file" in conflict.json()["error"]["message"]
        assert cli("model", "start", "b", "--url", srv.url).returncode == 0
        eventually(lambda: chat(srv, "b").status_code == 200)
        assert chat(srv, "b").json()["choices"][0]["message"]["content"] == "bee"

        assert cli("model", "stop", "a", "--url", srv.url).returncode == 0
        eventually(lambda: chat(srv, "a").status_code == 503)
        assert cli("model", "restart", "b", "--url", srv.url).returncode == 0
        eventually(lambda: chat(srv, "b").status_code == 200)

        unknown = cli("model", "start", "nope", "--url", srv.url)
        assert unknown.returncode == 1 and "not defined" in unknown.stderr
        listed = httpx.get(f"{srv.url}/api/models").json()["models"]
        assert {m["name"]: m["source"] for m in listed} == {"a": "config", "b": "api"}
    finally:
        srv.stop()

    # Definitions made through the API survive a restart, and are served again.
    again = start_server(tmp_path, cfg, home, "lifecycle-again")
    try:
        eventually(lambda: chat(again, "b").status_code == 200)
        assert chat(again, "b").json()["choices"][0]["message"]["content"] == "bee"
        resp = httpx.delete(f"{again.url}/api/models/b")
        assert resp.status_code == 200
        eventually(lambda: chat(again, "b").status_code == 404)
    finally:
        again.stop()


def test_lifecycle_without_a_server_is_a_clear_error() -> None:
    done = cli("model", "stop", "a", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1 and "no server answering" in done.stderr
    pytest.importorskip("httpx")
