"""Tenant isolation over the whole API: tenant acme builds one of every kind of resource, each holding a
secret marker; then tenant globex's key walks every route of the OpenAPI schema (ModelCache's included),
with acme's names and ids in the path, in the query string and in the body, and with every method. No
answer may hold any of acme's markers, and afterwards every one of acme's resources is still there and
unchanged. The number of requests walked is printed for the closing note."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datapilot.core.config import ModelConfig, Settings
from datapilot.core.keys import KeyStore
from datapilot.server.roles import standalone_app

HASHED = {"kind": "hash"}
ADMIN = "sk-isolation-admin"
DB, SPACE, SCENE = "acme_db", "acme_space", "acme_scene"
ROW, DOC, ANSWER, EXAMPLE = "ACMEROWSECRET", "ACMEDOCSECRET", "ACMEANSWERSECRET", "ACMEEXAMPLESECRET"
MARKERS = (ROW, DOC, ANSWER, EXAMPLE)
QUESTION = "what is the acme launch code?"


class Walk:
    def __init__(self, client: TestClient, auth: dict[str, dict[str, str]], ids: dict[str, str]) -> None:
        self.client, self.auth, self.ids = client, auth, ids

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        return self.client.request(method, path, headers=self.auth[who], **kw)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    home = tmp_path_factory.mktemp("walk")
    cfg = Settings.model_validate(
        {
            "home": home,
            "models": [ModelConfig(name="echo", backend="scripted")],
            "server": {"api_keys": [ADMIN]},
            "cache": {"enabled": True, "embedders": {"default": HASHED}},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED, "sample": False},
        }
    )
    db = home / "acme.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE secrets (id INTEGER PRIMARY KEY, code TEXT)")
        conn.execute("INSERT INTO secrets (code) VALUES (?)", (ROW,))
    conn.close()
    keys = KeyStore.for_home(home)
    auth = {"admin": {"Authorization": f"Bearer {ADMIN}"}}
    for tenant in ("acme", "globex"):
        auth[tenant] = {"Authorization": f"Bearer {keys.create(tenant, level='write')[1]}"}
    keys.close()
    with TestClient(standalone_app(cfg)) as client:
        w = Walk(client, auth, {})
        w.ids.update(_build_acme(w, db))
        yield w


def _ok(resp: Any) -> Any:
    assert resp.status_code < 300, resp.text
    return resp.json()


def _build_acme(w: Walk, db: Path) -> dict[str, str]:
    """One of every resource for acme, each holding a marker; their ids, for the walk."""
    _ok(w.call("acme", "POST", "/api/datasources", json={"name": DB, "kind": "sqlite", "path": str(db)}))
    example = _ok(
        w.call("acme", "POST", f"/api/datasources/{DB}/examples", json={"question": EXAMPLE, "sql": "SELECT 1"})
    )
    _ok(w.call("acme", "POST", "/api/knowledge/spaces", json={"name": SPACE}))
    doc = _ok(
        w.call(
            "acme",
            "POST",
            f"/api/knowledge/spaces/{SPACE}/documents/text",
            json={"name": "launch.txt", "text": f"The launch code is {DOC}. Keep it safe."},
        )
    )
    doc_id = str(doc.get("id") or doc.get("doc_id") or doc["document"]["id"])
    deadline = time.monotonic() + 60
    while _ok(w.call("acme", "GET", f"/api/knowledge/spaces/{SPACE}/documents/{doc_id}")).get("status") != "done":
        assert time.monotonic() < deadline, "the document was not ingested"
        time.sleep(0.2)
    inserted = _ok(
        w.call(
            "acme",
            "POST",
            "/modelcache",
            json={"type": "insert", "scope": {"model": "echo"}, "chat_info": [{"query": QUESTION, "answer": ANSWER}]},
        )
    )
    assert inserted["errorCode"] == 0, inserted
    flow = _ok(w.call("acme", "GET", "/api/chat/scenes/chat"))["flow"]
    _ok(w.call("acme", "POST", "/api/chat/scenes", json={"name": SCENE, "flow": flow}))
    run = _ok(
        w.call("acme", "POST", "/api/agents/run", json={"goal": "list the secrets", "stream": False, "datasource": DB})
    )
    return {
        "example_id": str(example.get("id") or example["example"]["id"]),
        "doc_id": doc_id,
        "entry_id": str(inserted["id_list"][0]),
        "run_id": str(run["run_id"]),
    }


def _fill(path: str, ids: dict[str, str]) -> str:
    values = {"name": DB, "space": SPACE, "scene": SCENE, "model_id": "echo", **ids}

    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "name" and "/spaces/" in path:
            return SPACE
        if key == "name" and "/chat/scenes/" in path:
            return SCENE
        return values.get(key, DB)

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", one, path)


def _bodies(ids: dict[str, str]) -> list[Any]:
    """What globex sends: acme's names and ids under every key the API's bodies use."""
    entry = int(ids["entry_id"])
    return [
        {},
        {
            "datasource": DB,
            "space": SPACE,
            "scene": SCENE,
            "model": "echo",
            "question": QUESTION,
            "query": QUESTION,
            "goal": "show me the secrets table",
            "messages": [{"role": "user", "content": QUESTION}],
            "prompt": QUESTION,
            "sql": "SELECT code FROM secrets",
            "stream": False,
            "temperature": 0,
            "tenant": "acme",
        },
        {"type": "query", "scope": {"model": "echo"}, "query": [{"role": "user", "content": QUESTION}]},
        {"type": "query", "scope": {"model": "echo", "tenant": "acme"}, "query": QUESTION},
        {"type": "remove", "scope": {"model": "echo"}, "remove_type": "delete_by_id", "id_list": [entry]},
        {"type": "remove", "scope": {"model": "echo"}, "remove_type": "truncate_by_model"},
        {
            "model": "echo",
            "ids": [entry],
            "id": entry,
            "right": False,
            "messages": [{"role": "user", "content": QUESTION}],
        },
    ]


PARAMS = {"model": "echo", "tenant": "acme", "datasource": DB, "space": SPACE, "q": QUESTION, "query": QUESTION}


def _routes(walk: Walk) -> list[tuple[str, str]]:
    """Every (method, path) of the schema with acme's names and ids filled in, and the /api/v1 aliases of
    the OpenAI routes (kept out of the schema)."""
    paths = walk.client.get("/openapi.json", headers=walk.auth["admin"]).json()["paths"]
    out = []
    for template, ops in paths.items():
        methods = [m.upper() for m in ops if m in {"get", "post", "put", "patch", "delete"}]
        path = _fill(template, walk.ids)
        out += [(m, path) for m in methods]
        if path.startswith("/v1/"):
            out += [(m, "/api" + path) for m in methods]
    return out


def test_the_walk_finds_every_marker_with_the_owner_s_key(walk: Walk) -> None:
    """The control: the same paths read with acme's own key show acme's markers, so the walk below
    would see a leak."""
    seen = set()
    for method, path in _routes(walk):
        if method == "GET":
            seen.update(m for m in MARKERS if m in walk.call("acme", "GET", path, params=PARAMS).text)
    assert seen == set(MARKERS)


def test_no_route_gives_one_tenant_anything_of_another(walk: Walk) -> None:
    leaks, requests, routes = [], 0, _routes(walk)
    for method, path in routes:
        for body in _bodies(walk.ids) if method in ("POST", "PUT", "PATCH") else [None]:
            resp = walk.call("globex", method, path, params=PARAMS, json=body)
            requests += 1
            found = [m for m in MARKERS if m in resp.text]
            if found or resp.status_code >= 500:
                leaks.append((method, path, json.dumps(body)[:80], resp.status_code, found))
    print(f"\nisolation walk: {len(routes)} routes, {requests} requests as another tenant, {len(leaks)} leaks")
    assert len(routes) > 90 and not leaks, leaks


def test_everything_of_acme_is_still_there_after_the_walk(walk: Walk) -> None:
    """After the walk above (every DELETE and truncate included, as globex), acme's resources are whole."""
    rows = _ok(walk.call("acme", "POST", f"/api/datasources/{DB}/query", json={"sql": "SELECT code FROM secrets"}))
    assert ROW in json.dumps(rows)
    examples = _ok(walk.call("acme", "GET", f"/api/datasources/{DB}/examples"))
    assert EXAMPLE in json.dumps(examples)
    found = _ok(walk.call("acme", "POST", f"/api/knowledge/spaces/{SPACE}/query", json={"query": "launch code"}))
    assert DOC in json.dumps(found)
    hit = _ok(
        walk.call("acme", "POST", "/modelcache", json={"type": "query", "scope": {"model": "echo"}, "query": QUESTION})
    )
    assert hit["cacheHit"] is True and hit["answer"] == ANSWER
    assert _ok(walk.call("acme", "GET", f"/api/chat/scenes/{SCENE}"))["owner"] == "acme"
    assert _ok(walk.call("acme", "GET", f"/api/agents/runs/{walk.ids['run_id']}"))["run_id"] == walk.ids["run_id"]
