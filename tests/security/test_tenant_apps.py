"""Tenants stay apart in the apps: the semantic cache (``/modelcache``, ``/api/cache``, and the answers
``/v1`` caches), AWEL flows, user-defined chat scenes, agent runs and the agents' long-term memory.

One real server (scripted models, hashed embeddings) with two tenants' keys (acme, globex) and an
admin's. A tenant is answered about another's resources exactly as about missing ones; what it
changes never reaches the other's."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datapilot.agents import LongTermMemory
from datapilot.apps import SceneService
from datapilot.awel import DAG, HttpTrigger, MapOperator
from datapilot.core.config import Settings
from datapilot.core.keys import KeyStore
from datapilot.core.tenancy import Principal, acting_as
from datapilot.retrieval import HashEmbedder
from datapilot.server.app import create_app
from tests.agents.conftest import HAPPY_RULES

HASHED = {"kind": "hash"}
SYSTEM = {"role": "system", "content": "You answer questions about the company."}
SHARED_FLOW = """
from datapilot.awel import DAG, HttpTrigger, MapOperator


def shout(body: dict) -> str:
    return str(body.get("text", "")).upper()


with DAG("shout", description="the deployment's flow") as dag:
    HttpTrigger("/shout", request_body=dict) >> MapOperator(shout)
"""
GOAL = "How are orders split by status?"


def messages(question: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}]


class Server:
    """The app, its keys (as ``Authorization`` headers) and a way to call it as each of them."""

    def __init__(self, client: TestClient, keys: dict[str, str]) -> None:
        self.client = client
        self.auth = {who: {"Authorization": f"Bearer {key}"} for who, key in keys.items()}

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.auth[who])

    def post(self, who: str, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(path, json=body, headers={**self.auth[who], **headers})

    def put(self, who: str, path: str, body: Any) -> Any:
        return self.client.put(path, json=body, headers=self.auth[who])

    def modelcache(self, who: str, data: dict[str, Any]) -> Any:
        """As ModelCache's README clients post: ``json=json.dumps(data)``, a JSON string of JSON."""
        return self.client.post(
            "/modelcache",
            content=json.dumps(json.dumps(data)),
            headers={**self.auth[who], "Content-Type": "application/json"},
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tenant-apps")
    flows = root / "flows"
    flows.mkdir()
    (flows / "shout.py").write_text(SHARED_FLOW, encoding="utf-8")
    settings = Settings.model_validate(
        {
            "home": root / "home",
            "models": [
                {"name": "echo", "backend": "scripted"},
                {"name": "s", "backend": "scripted", "params": {"rules": HAPPY_RULES}},
            ],
            "cache": {"enabled": True, "embedders": {"default": HASHED}, "max_temperature": 1.0},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED},
            "agents": {"max_rounds": 2, "model": "s"},
            "awel": {"flows_dir": flows},
        }
    )
    store = KeyStore.for_home(settings.home)
    keys = {
        "acme": store.create("acme", name="acme", level="write")[1],
        "globex": store.create("globex", name="globex", level="write")[1],
        "admin": store.create("ops", name="ops", level="admin")[1],
        "acme_scoped": store.create(
            "acme", name="scoped", level="write", scopes={"cache": ["other"], "flows": ["other"]}
        )[1],
    }
    store.close()
    with TestClient(create_app(settings)) as client:
        yield Server(client, keys)


# --- the semantic cache --------------------------------------------------------------------------------


def acme_entries(srv: Server) -> list[dict[str, Any]]:
    """acme's entries of model ``kb``, as an admin sees them (in acme's own scope)."""
    got = srv.get("admin", "/api/cache/entries", model="kb", tenant="acme")
    assert got.status_code == 200, got.text
    return list(got.json()["data"])


def test_one_tenant_s_cache_entries_are_invisible_and_untouchable_to_another(server: Server) -> None:
    srv = server
    # acme fills its cache through ModelCache's own API and the clean one; neither names a tenant.
    inserted = srv.modelcache(
        "acme",
        {
            "type": "insert",
            "scope": {"model": "kb"},
            "chat_info": [{"query": messages("Who founded Acme?"), "answer": "Wile E. Coyote"}],
        },
    ).json()
    assert inserted["errorCode"] == 0, inserted
    rest = srv.post(
        "acme",
        "/api/cache/insert",
        {"scope": {"model": "kb"}, "entries": [{"messages": messages("Where is Acme based?"), "answer": "Arizona"}]},
    )
    assert rest.status_code == 200, rest.text
    acme_ids = inserted["id_list"] + rest.json()["ids"]
    assert sorted(e["id"] for e in acme_entries(srv)) == sorted(acme_ids)
    hit = srv.post("acme", "/api/cache/query", {"scope": {"model": "kb"}, "messages": messages("Who founded Acme?")})
    assert hit.json()["hit"] and hit.json()["answer"] == "Wile E. Coyote"
    # The default tenant's scope (no tenant) holds none of them.
    assert srv.get("admin", "/api/cache/entries", model="kb").json()["data"] == []

    # globex asks the same questions: misses, through both APIs.
    mc = srv.modelcache("globex", {"type": "query", "scope": {"model": "kb"}, "query": messages("Who founded Acme?")})
    assert mc.json()["errorCode"] == 0 and mc.json()["cacheHit"] is False and mc.json()["answer"] == ""
    q = srv.post("globex", "/api/cache/query", {"scope": {"model": "kb"}, "messages": messages("Where is Acme based?")})
    assert q.status_code == 200 and q.json()["hit"] is False
    # ... and sees nothing of acme's anywhere.
    assert srv.get("globex", "/api/cache/entries", model="kb").json()["data"] == []
    stats = srv.get("globex", "/api/cache/stats", model="kb").json()
    assert stats["entries"] == 0 and stats["hits"] == 0
    globex_log = srv.get("globex", "/api/cache/log").json()["data"]
    assert globex_log and all(r["scope"]["tenant"] == "globex" for r in globex_log)
    assert all(r["hit_query"] in (None, "") for r in globex_log)
    assert all(r["scope"]["tenant"] == "globex" for r in srv.get("globex", "/api/cache/log", model="kb").json()["data"])
    assert srv.get("globex", "/api/cache/scopes").json()["data"] == []  # a miss registers no scope
    assert srv.get("acme", "/api/cache/scopes").json()["data"] == [{"model": "kb", "tenant": "acme"}]
    assert {"model": "kb", "tenant": "acme"} in srv.get("admin", "/api/cache/scopes").json()["data"]
    acme_log = srv.get("acme", "/api/cache/log").json()["data"]
    assert acme_log and all(r["scope"]["tenant"] == "acme" for r in acme_log)
    assert srv.get("globex", "/api/cache/feedback", model="kb").json()["data"] == []

    # Naming acme's tenant is refused (403), in each API's own error shape; nothing is read.
    named = srv.get("globex", "/api/cache/entries", model="kb", tenant="acme")
    assert named.status_code == 403 and named.json()["error"]["code"] == "permission_denied"
    assert srv.get("globex", "/api/cache/log", tenant="acme").status_code == 403
    refused = srv.modelcache(
        "globex", {"type": "query", "scope": {"model": "kb", "tenant": "acme"}, "query": messages("Who founded Acme?")}
    )
    assert refused.status_code == 403
    assert refused.json()["errorCode"] == 403 and "acme" in refused.json()["errorDesc"]
    assert refused.json()["cacheHit"] is False and refused.json()["answer"] == ""

    # globex removes acme's ids and truncates "kb", through both APIs: acme keeps everything.
    removed = srv.post("globex", "/api/cache/remove", {"scope": {"model": "kb"}, "ids": acme_ids})
    assert removed.status_code == 200 and removed.json()["removed"] == 0
    assert srv.post("globex", "/api/cache/truncate", {"scope": {"model": "kb"}}).json()["removed"] == 0
    mc_remove = srv.modelcache(
        "globex", {"type": "remove", "scope": {"model": "kb"}, "remove_type": "delete_by_id", "id_list": acme_ids}
    ).json()
    assert mc_remove["errorCode"] == 0 and mc_remove["response"]["removed"] == 0
    mc_truncate = srv.modelcache(
        "globex", {"type": "remove", "scope": {"model": "kb"}, "remove_type": "truncate_by_model"}
    ).json()
    assert mc_truncate["errorCode"] == 0 and mc_truncate["response"]["removed"] == 0
    mark = {"model": "kb", "id": acme_ids[0], "messages": messages("Who founded Acme?"), "right": False}
    assert srv.post("globex", "/api/cache/feedback", mark).status_code == 404  # not an entry of its scope
    put = srv.put("globex", "/api/cache/settings", {"scope": {"model": "kb"}, "settings": {"ttl_s": 5}})
    assert put.status_code == 200
    assert srv.get("acme", "/api/cache/settings", model="kb").json()["ttl_s"] is None
    assert sorted(e["id"] for e in acme_entries(srv)) == sorted(acme_ids)
    again = srv.post("acme", "/api/cache/query", {"scope": {"model": "kb"}, "messages": messages("Who founded Acme?")})
    assert again.json()["hit"] and again.json()["answer"] == "Wile E. Coyote"

    # The admin acts in whatever tenant it names.
    admin_hit = srv.post(
        "admin",
        "/api/cache/query",
        {"scope": {"model": "kb", "tenant": "acme"}, "messages": messages("Who founded Acme?")},
    )
    assert admin_hit.json()["hit"]
    admin_log = srv.get("admin", "/api/cache/log", tenant="acme").json()["data"]
    assert admin_log and all(r["scope"]["tenant"] == "acme" for r in admin_log)


def test_a_key_s_cache_scopes_limit_the_models_it_may_use(server: Server) -> None:
    srv = server
    refused = srv.post("acme_scoped", "/api/cache/query", {"scope": {"model": "kb"}, "prompt": "Who founded Acme?"})
    assert refused.status_code == 403 and "'kb'" in refused.json()["error"]["message"]
    mc = srv.modelcache("acme_scoped", {"type": "query", "scope": {"model": "kb"}, "query": messages("Who?")})
    assert mc.status_code == 403 and mc.json()["errorCode"] == 403
    # Its listings leave out the models outside its scopes, though they are its tenant's.
    assert srv.get("acme_scoped", "/api/cache/scopes").json()["data"] == []
    assert all(r["scope"]["model"] == "other" for r in srv.get("acme_scoped", "/api/cache/log").json()["data"])


def test_an_answer_v1_cached_for_one_tenant_is_not_served_to_another(server: Server) -> None:
    srv = server
    body = {"model": "echo", "messages": messages("What does Acme sell?"), "temperature": 0.0, "max_tokens": 32}
    first = srv.post("acme", "/v1/chat/completions", body)
    assert first.status_code == 200 and first.headers["x-datapilot-cache"] == "miss"
    deadline = time.monotonic() + 10  # fresh answers are stored off the request path
    while time.monotonic() < deadline:
        stored = srv.get("admin", "/api/cache/entries", model="echo", tenant="acme").json()["data"]
        if stored:
            break
        time.sleep(0.05)
    assert [e["question"] for e in stored] == ["What does Acme sell?"]  # in acme's own scope
    assert srv.get("admin", "/api/cache/entries", model="echo").json()["data"] == []
    assert srv.post("acme", "/v1/chat/completions", body).headers["x-datapilot-cache"] == "hit"
    other = srv.post("globex", "/v1/chat/completions", body)
    assert other.status_code == 200 and other.headers["x-datapilot-cache"] == "miss"
    assert "x-datapilot-cache-id" not in other.headers
    # Naming the other tenant's cache is a 403, and answers nothing.
    named = srv.post("globex", "/v1/chat/completions", body, **{"x-datapilot-cache-tenant": "acme"})
    assert named.status_code == 403 and named.json()["error"]["code"] == "permission_denied"
    # Naming its own is the same as naming none.
    own = srv.post("acme", "/v1/chat/completions", body, **{"x-datapilot-cache-tenant": "acme"})
    assert own.headers["x-datapilot-cache"] == "hit"
    # A key whose cache scopes leave the model out is answered by the model, around the cache.
    scoped = srv.post("acme_scoped", "/v1/chat/completions", body)
    assert scoped.status_code == 200 and scoped.headers["x-datapilot-cache"] == "bypass"


# --- flows -----------------------------------------------------------------------------------------------


def acme_flow() -> DAG:
    with DAG("acme_private", description="acme's own flow") as dag:
        HttpTrigger("/acme/private", request_body=dict) >> MapOperator(lambda body: {"secret": "acme"})
    return dag


def test_flows_shared_ones_for_all_and_a_tenant_s_own_for_it_alone(server: Server) -> None:
    srv = server
    manager = srv.client.app.state.services.awel  # type: ignore[attr-defined]
    if "acme_private" not in manager.flows:
        asyncio.run(manager.add(acme_flow(), owner="acme"))
    # The configured folder's flow is shared: every tenant lists and runs it.
    for who in ("acme", "globex"):
        names = {f["name"] for f in srv.get(who, "/api/v1/awel/flows").json()["data"]}
        run = srv.post(who, "/api/v1/awel/flows/shout/run", {"input": {"text": "hi"}})
        assert run.status_code == 200 and run.json()["result"] == "HI"
        assert "shout" in names
    assert "acme_private" in {f["name"] for f in srv.get("acme", "/api/v1/awel/flows").json()["data"]}
    assert srv.post("acme", "/api/v1/awel/flows/acme_private/run", {"input": {}}).json()["result"] == {"secret": "acme"}
    assert srv.post("acme", "/api/v1/awel/trigger/acme/private", {}).json() == {"secret": "acme"}
    # globex: acme's flow is not there, however asked, and the error lists none of acme's.
    listed = srv.get("globex", "/api/v1/awel/flows").json()
    assert "acme_private" not in {f["name"] for f in listed["data"]} and listed["errors"] == []
    missing = srv.get("globex", "/api/v1/awel/flows/no_such_flow")
    for resp in (
        srv.get("globex", "/api/v1/awel/flows/acme_private"),
        srv.post("globex", "/api/v1/awel/flows/acme_private/run", {"input": {}}),
    ):
        assert resp.status_code == missing.status_code == 404
        assert "acme_private" not in resp.json()["error"]["message"].split(";", 1)[1]
    trig = srv.post("globex", "/api/v1/awel/trigger/acme/private", {})
    assert trig.status_code == 404 and "/acme/private; endpoints: /shout" in trig.json()["error"]["message"]
    assert "acme_private" in {f["name"] for f in srv.get("admin", "/api/v1/awel/flows").json()["data"]}
    # A key limited to other flows may not run this one, by name or by its trigger.
    for resp in (
        srv.post("acme_scoped", "/api/v1/awel/flows/shout/run", {"input": {"text": "x"}}),
        srv.post("acme_scoped", "/api/v1/awel/trigger/shout", {"text": "x"}),
    ):
        assert resp.status_code == 403 and "'shout'" in resp.json()["error"]["message"]


# --- chat scenes -----------------------------------------------------------------------------------------


def test_a_user_scene_is_its_tenant_s_and_the_built_ins_are_everyone_s(server: Server) -> None:
    srv = server
    chat_flow = srv.get("acme", "/api/chat/scenes/chat").json()["flow"]
    made = srv.post("acme", "/api/chat/scenes", {"name": "acme_chat", "flow": chat_flow})
    assert made.status_code == 201 and made.json()["owner"] == "acme"
    assert "acme_chat" in srv.get("acme", "/api/chat/scenes").json()["data"]
    answer = srv.post("acme", "/api/chat", {"scene": "acme_chat", "question": "hello", "model": "echo"})
    assert answer.status_code == 200, answer.text

    listed = srv.get("globex", "/api/chat/scenes").json()["data"]
    assert "acme_chat" not in listed and {"data", "chat", "db_qa"} <= set(listed)
    shown, missing = srv.get("globex", "/api/chat/scenes/acme_chat"), srv.get("globex", "/api/chat/scenes/nope")
    assert shown.status_code == missing.status_code == 404
    registered = missing.json()["error"]["message"].split("registered: ")[1]
    assert shown.json()["error"]["message"].split("registered: ")[1] == registered and "acme" not in registered
    ran = srv.post("globex", "/api/chat", {"scene": "acme_chat", "question": "hello", "model": "echo"})
    assert ran.status_code == 400 and "unknown chat scene 'acme_chat'" in ran.json()["error"]["message"]
    assert "acme_chat;" not in ran.json()["error"]["message"] and "registered: " in ran.json()["error"]["message"]
    # The name is taken: a 409 that does not say by whom, and acme's scene is unchanged (replace too).
    for replace in (False, True):
        taken = srv.post("globex", "/api/chat/scenes", {"name": "acme_chat", "flow": chat_flow, "replace": replace})
        assert taken.status_code == 409 and "acme" not in taken.json()["error"]["message"].replace("acme_chat", "")
    assert srv.get("acme", "/api/chat/scenes/acme_chat").json()["owner"] == "acme"
    # The built-in modes stay every tenant's.
    builtin = srv.post("globex", "/api/chat", {"scene": "chat", "question": "hello", "model": "echo"})
    assert builtin.status_code == 200, builtin.text
    assert srv.get("admin", "/api/chat/scenes/acme_chat").status_code == 200


def test_scene_owners_survive_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    flow = SceneService(folder).get("chat").flow.to_json()
    with acting_as(Principal("acme", "write")):
        SceneService(folder).save("mine", flow)
    (folder / "legacy.json").write_text(flow, encoding="utf-8")  # saved before tenants: the default's
    again = SceneService(folder)
    again.load_folder()
    with acting_as(Principal("acme", "write")):
        assert "mine" in again.names() and "legacy" not in again.names()
    with acting_as(Principal("globex", "write")):
        assert "mine" not in again.names() and again.find("mine") is None
    with acting_as(Principal("default", "read")):
        assert "legacy" in again.names() and "mine" not in again.names()


# --- agent runs and memory -------------------------------------------------------------------------------


PAST = "Relevant past findings"


def prompts(records: list[dict[str, Any]]) -> list[str]:
    """The system prompts a run's agents were given (where recalled memories go)."""
    return [r["content"] for r in records if r["type"] == "message" and r.get("role") == "system"]


def orders_db(path: Path) -> Path:
    """A SQLite database with the ``orders`` table the scripted agents query."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
        conn.executemany("INSERT INTO orders (status) VALUES (?)", [("delivered",), ("delivered",), ("pending",)])
    conn.close()
    return path


def test_agent_runs_are_their_tenant_s(server: Server, tmp_path: Path) -> None:
    srv = server
    for who in ("acme", "globex"):  # each tenant's agents query its own source
        made = srv.post(
            who,
            "/api/datasources",
            {"name": f"{who}_db", "kind": "sqlite", "path": str(orders_db(tmp_path / f"{who}.db"))},
        )
        assert made.status_code == 200, made.text
    run = srv.post("acme", "/api/agents/run", {"goal": GOAL, "stream": False, "datasource": "acme_db"})
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    with srv.client.stream(
        "POST", "/api/agents/run", json={"goal": GOAL, "datasource": "acme_db"}, headers=srv.auth["acme"]
    ) as resp:
        streamed = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    streamed_id = streamed[0]["run_id"]
    mine = {r["run_id"]: r for r in srv.get("acme", "/api/agents/runs").json()["data"]}
    assert {run_id, streamed_id} <= set(mine) and mine[run_id]["owner"] == "acme"
    assert srv.get("acme", f"/api/agents/runs/{run_id}").json()["run_id"] == run_id

    assert not {run_id, streamed_id} & {r["run_id"] for r in srv.get("globex", "/api/agents/runs").json()["data"]}
    for rid in (run_id, streamed_id):
        hidden, missing = srv.get("globex", f"/api/agents/runs/{rid}"), srv.get("globex", "/api/agents/runs/nope")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"] == f"no agent run {rid!r} is kept here"
    assert {run_id, streamed_id} <= {r["run_id"] for r in srv.get("admin", "/api/agents/runs").json()["data"]}

    # What acme's runs remembered is acme's: globex's run recalls none of it.
    memory = srv.client.app.state.services.agents.memory  # type: ignore[attr-defined]
    assert asyncio.run(memory.for_tenant("acme").search(GOAL, 10, min_score=0.0))
    assert asyncio.run(memory.for_tenant("globex").search(GOAL, 10, min_score=0.0)) == []
    assert any(PAST in m for m in prompts(streamed))  # acme's second run recalled its first one's findings
    theirs = srv.post("globex", "/api/agents/run", {"goal": GOAL, "stream": False, "datasource": "globex_db"}).json()
    assert theirs["ok"] and prompts(theirs["trace"]["records"])
    assert not any(PAST in m for m in prompts(theirs["trace"]["records"]))
    found = asyncio.run(memory.for_tenant("globex").search(GOAL, 10, min_score=0.0))
    assert found and all(h.metadata["run_id"] == theirs["run_id"] for h in found)


async def test_long_term_memory_recalls_only_the_tenant_s_own(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    memory = LongTermMemory(HashEmbedder(), path)
    try:
        with acting_as(Principal("acme", "write")):
            await memory.add(["acme's margin is 12 percent"])
        await memory.for_tenant("globex").add(["globex's margin is 40 percent"])
        with acting_as(Principal("globex", "admin")):  # recall is no listing: an admin's too is its own
            assert [h.text for h in await memory.search("margin percent", 5, min_score=0.0)] == [
                "globex's margin is 40 percent"
            ]
        assert [h.text for h in await memory.for_tenant("acme").search("margin percent", 5, min_score=0.0)] == [
            "acme's margin is 12 percent"
        ]
        assert await memory.search("margin percent", 5, min_score=0.0) == []  # the default tenant has none
    finally:
        memory.close()
    reopened = LongTermMemory(HashEmbedder(), path)  # the owners are stored with the rows
    try:
        hits = await reopened.for_tenant("acme").search("margin percent", 5, min_score=0.0)
        assert [h.text for h in hits] == ["acme's margin is 12 percent"]
    finally:
        reopened.close()


async def test_a_memory_from_before_tenants_is_the_default_tenant_s(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    embedder = HashEmbedder()
    vector = (await embedder.embed(["the old margin was 9 percent"]))[0].astype("float32")
    with sqlite3.connect(path) as conn:  # the table as it was, without the tenant column
        conn.execute(
            "CREATE TABLE memories (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
            "metadata TEXT NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL)"
        )
        conn.execute(
            "INSERT INTO memories (text, metadata, vector, created) VALUES (?, '{}', ?, 0)",
            ("the old margin was 9 percent", vector.tobytes()),
        )
    conn.close()
    memory = LongTermMemory(embedder, path)
    try:
        assert [h.text for h in await memory.search("margin percent", 5, min_score=0.0)] == [
            "the old margin was 9 percent"
        ]
        assert await memory.for_tenant("acme").search("margin percent", 5, min_score=0.0) == []
    finally:
        memory.close()
