"""Tenants' data sources and knowledge spaces: each tenant sees, uses, changes and deletes only its own.

A real server (scripted model, hashed embedders) with two tenants' keys and the config's admin key:
``acme`` adds a SQLite data source (a real file) with a verified example, and a knowledge space with
a document. ``globex`` gets exactly the 404 of a missing one on every route that names them (the
route table is walked, so a route added later without the check fails here), does not see them in
listings, cannot delete them, cannot take their names, and cannot chat with them. The admin sees both
tenants'. A key's scopes and level narrow what it may do (403, after the visibility check). Metadata
stores from before tenants (SQLite, PostgreSQL, MariaDB) get the owner column on start; their rows are
the default tenant's.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, make_url, text

from datapilot.core.config import DataSettings, ModelConfig, Settings
from datapilot.core.keys import KeyStore
from datapilot.core.tenancy import Principal, acting_as
from datapilot.datasource import DataSourceConfig, DataSourceNotFoundError, DataSources, DataSourceStore
from datapilot.rag import SpaceNotFoundError
from datapilot.rag._store import KnowledgeStore
from datapilot.server.roles import standalone_app

ADMIN = "sk-tenant-data-admin"
HASHED = {"kind": "hash"}
SOURCE, SOURCE2, SPACE = "sales", "sales2", "handbook"  # acme's
OTHER_SOURCE, OTHER_SPACE = "ledger", "wiki"  # globex's
DOC_TEXT = "The refund window is thirty days. Shipping to Mars takes nine months."


def settings(home: Path) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "models": [ModelConfig(name="echo", backend="scripted")],
            "server": {"api_keys": [ADMIN]},
            "cache": {"enabled": False},
            "knowledge": {"embedder": HASHED},
            "data": {"model": "echo", "embedder": HASHED},
        }
    )


def sqlite_file(path: Path, table: str = "orders") -> Path:
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, customer TEXT, amount REAL)")
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", [(1, "Ada", 12.5), (2, "Grace", 40.0)])
    db.close()
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class World:
    client: TestClient
    home: Path
    acme: dict[str, str]
    globex: dict[str, str]
    admin: dict[str, str]
    acme_read: dict[str, str]
    acme_scoped: dict[str, str]
    doc_id: str
    example_id: int

    def call(self, who: dict[str, str], method: str, path: str, **kw: Any) -> Any:
        return self.client.request(method, path, headers=who, **kw)


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("tenants")
    cfg = settings(home)
    keys = KeyStore.for_home(home)
    acme = bearer(keys.create("acme", level="write")[1])
    globex = bearer(keys.create("globex", level="write")[1])
    acme_read = bearer(keys.create("acme", level="read")[1])
    scopes = {"datasources": [SOURCE], "spaces": ["elsewhere"]}
    acme_scoped = bearer(keys.create("acme", level="write", scopes=scopes)[1])
    keys.close()
    with TestClient(standalone_app(cfg)) as client:
        for who, name in ((acme, SOURCE), (acme, SOURCE2), (globex, OTHER_SOURCE)):
            body = {"name": name, "kind": "sqlite", "path": str(sqlite_file(home / f"{name}.db"))}
            ok(client.post("/api/datasources", headers=who, json=body))
        example = {"question": "how many orders?", "sql": "SELECT COUNT(*) FROM orders"}
        example_id = ok(client.post(f"/api/datasources/{SOURCE}/examples", headers=acme, json=example))["id"]
        for who, space in ((acme, SPACE), (globex, OTHER_SPACE)):
            ok(client.post("/api/knowledge/spaces", headers=who, json={"name": space}), 201)
        doc = {"name": "policy.md", "text": DOC_TEXT}
        doc_id = ok(client.post(f"/api/knowledge/spaces/{SPACE}/documents/text", headers=acme, json=doc), 202)["id"]
        deadline = time.monotonic() + 60
        while ok(client.get(f"/api/knowledge/spaces/{SPACE}/documents/{doc_id}", headers=acme))["status"] != "done":
            assert time.monotonic() < deadline, "the document was not ingested in 60 s"
            time.sleep(0.05)
        yield World(client, home, acme, globex, bearer(ADMIN), acme_read, acme_scoped, doc_id, example_id)


# --- the route walk -------------------------------------------------------------------------------------

# Bodies that pass each route's validation, so that what answers is the route's own lookup.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/datasources/{name}/query"): {"json": {"sql": "SELECT 1"}},
    ("POST", "/api/datasources/{name}/examples"): {"json": {"question": "q", "sql": "SELECT 1"}},
    ("POST", "/api/datasources/{name}/examples/import"): {"json": [{"question": "q", "sql": "SELECT 1"}]},
    ("POST", "/api/datasources/{name}/feedback"): {"json": {"question": "q", "sql": "SELECT 1", "rating": "up"}},
    ("POST", "/api/knowledge/spaces/{space}/documents"): {"files": {"files": ("x.txt", b"some text", "text/plain")}},
    ("POST", "/api/knowledge/spaces/{space}/documents/text"): {"json": {"name": "x.txt", "text": "some text"}},
    ("POST", "/api/knowledge/spaces/{space}/query"): {"json": {"query": "refund"}},
    ("POST", "/api/knowledge/spaces/{space}/chat"): {"json": {"question": "refund?", "stream": False}},
}


def named_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path template) of the OpenAPI schema that names a data source or a space."""
    paths = client.get("/openapi.json").json()["paths"]
    out = []
    for path, ops in paths.items():
        if path.startswith("/api/datasources/{name}") or path.startswith("/api/knowledge/spaces/{space}"):
            out += [(m.upper(), path) for m in ops if m in {"get", "post", "put", "patch", "delete"}]
    return sorted(out)


def fill(path: str, w: World, source: str, space: str) -> str:
    values = {"name": source, "space": space, "doc_id": w.doc_id, "example_id": str(w.example_id)}
    return re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path)


def refusal(resp: Any, name: str) -> tuple[int, dict[str, Any]]:
    """A response with the resource's name blanked, to compare with a missing resource's."""
    body = json.loads(resp.text.replace(repr(name), "'?'"))
    return resp.status_code, body


def test_another_tenant_gets_the_404_of_a_missing_one_on_every_route(world: World) -> None:
    routes = named_routes(world.client)
    assert len(routes) >= 20, routes  # the whole table: sources, values, examples, spaces, documents, chat
    kinds = {path.split("/")[2] for _, path in routes}
    assert kinds == {"datasources", "knowledge"}
    wrong = []
    for method, path in routes:
        extra = BODIES.get((method, path), {})
        theirs = world.call(world.globex, method, fill(path, world, SOURCE, SPACE), params={"q": "x"}, **extra)
        missing = world.call(world.globex, method, fill(path, world, "nope", "nope"), params={"q": "x"}, **extra)
        name = SOURCE if "{name}" in path else SPACE
        if theirs.status_code != 404 or refusal(theirs, name) != refusal(missing, "nope"):
            wrong.append((method, path, theirs.status_code, theirs.text[:200], missing.text[:200]))
        assert "acme" not in theirs.text and SOURCE2 not in theirs.text  # no owner, no other names
    assert not wrong, wrong
    # Nothing of acme's changed: the source, its example, the space and its document are all there.
    examples = ok(world.call(world.acme, "GET", f"/api/datasources/{SOURCE}/examples"))["data"]
    assert [e["id"] for e in examples] == [world.example_id]
    docs = ok(world.call(world.acme, "GET", f"/api/knowledge/spaces/{SPACE}/documents"))["data"]
    assert [(d["id"], d["status"]) for d in docs] == [(world.doc_id, "done")]


def test_another_tenant_cannot_delete_them_and_they_stay(world: World) -> None:
    for path in (f"/api/datasources/{SOURCE}", f"/api/knowledge/spaces/{SPACE}"):
        assert world.call(world.globex, "DELETE", path).status_code == 404
        assert world.call(world.acme, "GET", path).status_code == 200
    rows = ok(world.call(world.acme, "POST", f"/api/datasources/{SOURCE}/query", json={"sql": "SELECT * FROM orders"}))
    assert rows["row_count"] == 2


def test_listings_show_only_the_callers_tenant_and_the_admin_sees_all(world: World) -> None:
    def sources(who: dict[str, str]) -> dict[str, str]:
        return {s["name"]: s["owner"] for s in ok(world.call(who, "GET", "/api/datasources"))["data"]}

    def spaces(who: dict[str, str]) -> dict[str, str]:
        return {s["name"]: s["owner"] for s in ok(world.call(who, "GET", "/api/knowledge/spaces"))["data"]}

    assert sources(world.acme) == {SOURCE: "acme", SOURCE2: "acme"}
    assert sources(world.globex) == {OTHER_SOURCE: "globex"}  # not even the default tenant's sample
    assert sources(world.admin) == {SOURCE: "acme", SOURCE2: "acme", OTHER_SOURCE: "globex", "sample": "default"}
    assert spaces(world.acme) == {SPACE: "acme"}
    assert spaces(world.globex) == {OTHER_SPACE: "globex"}
    assert spaces(world.admin) == {SPACE: "acme", OTHER_SPACE: "globex"}
    # The admin reaches any tenant's resources.
    assert ok(world.call(world.admin, "GET", f"/api/datasources/{SOURCE}/schema"))["tables"][0]["name"] == "orders"
    assert ok(world.call(world.admin, "GET", f"/api/knowledge/spaces/{SPACE}"))["documents"] == 1


def test_a_404_names_only_the_callers_own_resources(world: World) -> None:
    message = world.call(world.globex, "GET", "/api/datasources/nope").json()["error"]["message"]
    assert OTHER_SOURCE in message and SOURCE not in message and "sample" not in message
    message = world.call(world.globex, "GET", "/api/knowledge/spaces/nope").json()["error"]["message"]
    assert OTHER_SPACE in message and SPACE not in message


def test_chat_cannot_reach_another_tenants_source_or_space(world: World) -> None:
    """The scenes answer another tenant's source exactly as a missing one (the data scene reports it in
    its answer, as it does for a missing source); the default source is the default tenant's sample."""
    asks: list[dict[str, Any]] = [
        {"scene": "data", "question": "how many orders?", "datasource": SOURCE},
        {"scene": "data", "question": "how many orders?", "datasource": SOURCE, "stream": True},
        {"scene": "db_qa", "question": "which tables?", "datasource": SOURCE},
        {"scene": "agent", "question": "how many orders?", "datasource": SOURCE},
    ]
    for ask in asks:
        theirs = world.call(world.globex, "POST", "/api/chat", json=ask)
        missing = world.call(world.globex, "POST", "/api/chat", json={**ask, "datasource": "nope"})
        assert theirs.status_code == missing.status_code
        assert theirs.text.replace(repr(SOURCE), "'?'") == missing.text.replace("'nope'", "'?'")
        assert "datasource_not_found" in theirs.text and "Ada" not in theirs.text and "acme" not in theirs.text
    default = world.call(world.globex, "POST", "/api/chat", json={"question": "how many orders?"})
    assert "no data source named 'sample' (registered: ledger)" in default.text
    # The knowledge scene: a 404 and none of the space's text.
    knowledge = {"scene": "knowledge", "question": "how long is the refund window?", "space": SPACE}
    theirs = world.call(world.globex, "POST", "/api/chat", json=knowledge)
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "space_not_found"
    assert "thirty days" not in theirs.text
    # acme's own knowledge chat finds its document.
    mine = ok(world.call(world.acme, "POST", "/api/chat", json={**knowledge, "model": "echo"}))
    assert "thirty days" in json.dumps(mine)


def test_the_knowledge_scene_answers_another_tenants_space_as_a_missing_one(world: World) -> None:
    ask = {"scene": "knowledge", "question": "how long is the refund window?", "model": "echo"}
    missing = world.call(world.globex, "POST", "/api/chat", json={**ask, "space": "nope"})
    assert missing.status_code == 404 and SPACE not in missing.text  # no other tenant's names
    theirs = world.call(world.globex, "POST", "/api/chat", json={**ask, "space": SPACE})
    assert theirs.text.replace(repr(SPACE), "'?'") == missing.text.replace("'nope'", "'?'")


def test_a_name_another_tenant_holds_is_taken_without_saying_by_whom(world: World) -> None:
    path = str(world.home / f"{SOURCE}.db")
    resp = world.call(world.globex, "POST", "/api/datasources", json={"name": SOURCE, "kind": "sqlite", "path": path})
    assert resp.status_code == 409 and "taken; choose another" in resp.json()["error"]["message"]
    assert "acme" not in resp.text
    replace = {"name": SOURCE, "kind": "sqlite", "path": path, "replace": True}
    assert world.call(world.globex, "POST", "/api/datasources", json=replace).status_code == 409
    uploads_before = sorted((world.home / "uploads").glob("*")) if (world.home / "uploads").exists() else []
    upload = world.call(world.globex, "POST", "/api/datasources/upload", params={"filename": "t.csv", "name": SOURCE},
                        content=b"a,b\n1,2\n")  # fmt: skip
    assert upload.status_code == 409 and "acme" not in upload.text
    uploads_after = sorted((world.home / "uploads").glob("*")) if (world.home / "uploads").exists() else []
    assert uploads_after == uploads_before  # the refused upload left no file
    space = world.call(world.globex, "POST", "/api/knowledge/spaces", json={"name": SPACE})
    assert space.status_code == 409 and "taken; choose another" in space.json()["error"]["message"]
    assert "acme" not in space.text
    # The owner's source is still acme's and unchanged.
    assert ok(world.call(world.acme, "GET", f"/api/datasources/{SOURCE}"))["path"] == path
    # Within a tenant: today's behaviour (already exists; replace replaces, keeping the owner).
    again = world.call(world.acme, "POST", "/api/datasources", json={"name": SOURCE, "kind": "sqlite", "path": path})
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    assert world.call(world.acme, "POST", "/api/knowledge/spaces", json={"name": SPACE}).status_code == 409
    ok(world.call(world.acme, "POST", "/api/datasources", json={**replace, "description": "replaced"}))
    listed = {s["name"]: s for s in ok(world.call(world.acme, "GET", "/api/datasources"))["data"]}
    assert listed[SOURCE]["owner"] == "acme" and listed[SOURCE]["description"] == "replaced"


def test_a_keys_scopes_narrow_its_tenants_resources_after_visibility(world: World) -> None:
    scoped = world.acme_scoped
    assert world.call(scoped, "GET", f"/api/datasources/{SOURCE}/schema").status_code == 200
    refused = world.call(scoped, "GET", f"/api/datasources/{SOURCE2}/schema")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert world.call(scoped, "POST", f"/api/datasources/{SOURCE2}/query", json={"sql": "SELECT 1"}).status_code == 403
    assert world.call(scoped, "GET", f"/api/knowledge/spaces/{SPACE}").status_code == 403
    assert world.call(scoped, "POST", "/api/chat", json={"question": "q", "datasource": SOURCE2}).status_code == 403
    # Another tenant's resource stays a 404, whatever the scopes say.
    assert world.call(scoped, "GET", f"/api/datasources/{OTHER_SOURCE}/schema").status_code == 404
    assert world.call(scoped, "GET", f"/api/knowledge/spaces/{OTHER_SPACE}").status_code == 404


def test_a_read_key_queries_but_cannot_create_or_delete(world: World) -> None:
    read = world.acme_read
    new = {"name": "fresh", "kind": "sqlite", "path": str(world.home / f"{SOURCE}.db")}
    assert world.call(read, "POST", "/api/datasources", json=new).status_code == 403
    assert world.call(read, "DELETE", f"/api/datasources/{SOURCE2}").status_code == 403
    assert world.call(read, "POST", "/api/knowledge/spaces", json={"name": "fresh"}).status_code == 403
    assert world.call(read, "DELETE", f"/api/knowledge/spaces/{SPACE}").status_code == 403
    assert world.call(world.acme, "GET", "/api/datasources/fresh").status_code == 404  # nothing was created
    assert world.call(world.acme, "GET", f"/api/datasources/{SOURCE2}").status_code == 200  # nothing was deleted
    rows = ok(world.call(read, "POST", f"/api/datasources/{SOURCE}/query", json={"sql": "SELECT id FROM orders"}))
    assert rows["rows"] == [[1], [2]]
    passages = ok(world.call(read, "POST", f"/api/knowledge/spaces/{SPACE}/query", json={"query": "refund window"}))
    assert "thirty days" in passages["data"][0]["text"]


def test_the_owner_deletes_its_own(world: World) -> None:
    ok(world.call(world.acme, "DELETE", f"/api/datasources/{SOURCE2}"))
    assert world.call(world.acme, "GET", f"/api/datasources/{SOURCE2}").status_code == 404
    assert world.call(world.admin, "GET", f"/api/datasources/{SOURCE2}").status_code == 404
    ok(world.call(world.globex, "DELETE", f"/api/knowledge/spaces/{OTHER_SPACE}"))
    assert OTHER_SPACE not in {s["name"] for s in ok(world.call(world.admin, "GET", "/api/knowledge/spaces"))["data"]}


# --- stores from before tenants ---------------------------------------------------------------------------

OLD_TABLE = (
    "CREATE TABLE datasources (name VARCHAR(64) PRIMARY KEY, kind VARCHAR(32) NOT NULL, spec TEXT NOT NULL,"
    " secret TEXT, created_at FLOAT NOT NULL)"
)


def old_row(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "url": f"sqlite:///{path}",
        "path": None,
        "files": [],
        "description": "old",
        "sql_model": None,
    }
    return {"name": "old", "kind": "sqlite", "spec": json.dumps(spec), "secret": None, "created_at": 1.0}


def check_migrated(store: DataSourceStore, db: Path) -> None:
    """The old row is the default tenant's: a tenant's key does not see it, the default tenant does."""
    assert "owner" in {c["name"] for c in inspect(store._engine).get_columns("datasources")}
    assert [(c.name, owner) for c, owner in store.entries()] == [("old", "default")]
    sources = DataSources(DataSettings(sample=False), db.parent, store)
    with acting_as(Principal("acme", "write")):
        with pytest.raises(DataSourceNotFoundError) as missing:
            sources.get("old")
        assert "registered: none" in missing.value.message
        assert sources.list() == []
    with acting_as(Principal("default", "read")):
        assert sources.get("old").description == "old"
        assert [c.name for c in sources.list()] == ["old"]


async def test_an_old_sqlite_metadata_store_gets_the_owner_column(tmp_path: Path) -> None:
    db = sqlite_file(tmp_path / "data.db")
    with sqlite3.connect(tmp_path / "metadata.db") as old:
        old.execute(OLD_TABLE)
        row = old_row(db)
        old.execute("INSERT INTO datasources VALUES (?, ?, ?, ?, ?)", tuple(row.values()))
    old.close()
    store = DataSourceStore.at_home(tmp_path)
    try:
        check_migrated(store, db)
        # What the CLI adds outside a request is the default tenant's; a tenant's add is its own.
        sources = DataSources(DataSettings(sample=False), tmp_path, store)
        await sources.add(DataSourceConfig(name="cli", kind="sqlite", path=str(db)))
        with acting_as(Principal("acme", "write")):
            await sources.add(DataSourceConfig(name="mine", kind="sqlite", path=str(db)))
        assert dict((c.name, o) for c, o in store.entries()) == {"old": "default", "cli": "default", "mine": "acme"}
    finally:
        store.close()
    reopened = DataSourceStore.at_home(tmp_path)  # a second start finds the column and changes nothing
    assert len(reopened.entries("default")) == 2 and len(reopened.entries("acme")) == 1
    reopened.close()


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_an_old_server_metadata_store_gets_the_owner_column(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_url(request.getfixturevalue("postgres_url" if kind == "postgres" else "mariadb_url"))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # a database of its own, so the shared server's tables are untouched
        conn.execute(text("DROP DATABASE IF EXISTS dp_tenant_migration"))
        conn.execute(text("CREATE DATABASE dp_tenant_migration"))
    own = url.set(database="dp_tenant_migration")
    db = sqlite_file(tmp_path / "data.db")
    engine = create_engine(own)
    with engine.begin() as conn:
        conn.execute(text(OLD_TABLE))
        conn.execute(text("INSERT INTO datasources VALUES (:name, :kind, :spec, :secret, :created_at)"), old_row(db))
    engine.dispose()
    store = DataSourceStore(own.render_as_string(hide_password=False))
    try:
        check_migrated(store, db)
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE dp_tenant_migration"))
        admin.dispose()


def test_an_old_knowledge_store_gets_the_owner_column(tmp_path: Path) -> None:
    path = tmp_path / "knowledge.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE spaces (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '',"
                    " chunking TEXT NOT NULL, created REAL NOT NULL)")  # fmt: skip
        old.execute("INSERT INTO spaces VALUES ('old', '', '{}', 1.0)")
    old.close()
    store = KnowledgeStore(path)
    try:
        assert store.owners() == {"old": "default"}
        with acting_as(Principal("acme", "write")):
            with pytest.raises(SpaceNotFoundError) as missing:
                store.space("old")
            assert "spaces: none" in missing.value.message
            store.create_space("mine", "", {})
        with acting_as(Principal("default", "read")):
            assert store.space("old").name == "old"
            with pytest.raises(SpaceNotFoundError):
                store.space("mine")
        assert store.owners() == {"old": "default", "mine": "acme"}
    finally:
        store.close()


def test_a_scoped_key_creates_only_what_its_scopes_name(world: World) -> None:
    scoped = world.acme_scoped  # datasources: [sales]; spaces: [elsewhere]
    body = {"name": "outside", "kind": "sqlite", "path": str(world.home / f"{SOURCE}.db")}
    assert world.call(scoped, "POST", "/api/datasources", json=body).status_code == 403
    assert world.call(scoped, "POST", "/api/knowledge/spaces", json={"name": "outside"}).status_code == 403
    assert world.call(world.admin, "GET", "/api/datasources/outside").status_code == 404  # nothing made
    ok(world.call(scoped, "POST", "/api/knowledge/spaces", json={"name": "elsewhere"}), 201)
    assert {s["name"]: s["owner"] for s in ok(world.call(world.acme, "GET", "/api/knowledge/spaces"))["data"]} == {
        SPACE: "acme",
        "elsewhere": "acme",
    }
