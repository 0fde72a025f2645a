"""Every chat scene is an AWEL flow of the modules' operators: shown, copied, changed and served."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datapilot.apps import BUILTIN_SCENES, ChatContext, SceneRequest, SceneService, scene_service, scene_text
from datapilot.awel import (
    DAG,
    OPERATORS,
    BaseOperator,
    InputOperator,
    JoinOperator,
    NodeError,
    SerializationError,
    compile_dsl,
    to_dsl,
)
from datapilot.cache import CachedLLMClient, CacheLookupOperator, CacheStoreOperator, HashEmbedder, SemanticCache
from datapilot.core.config import CacheSettings, DataSettings
from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.core.events import DoneEvent, StepEvent, TextEvent
from datapilot.datasource import DataSourceConfig, DataSources, UnsafeSQLError
from tests.text2sql.conftest import ScriptedFactory

SQL_REPLY = "```sql\nSELECT segment, COUNT(*) AS customers FROM customers GROUP BY segment\n```"


def test_the_built_in_scenes_are_flows_of_module_operators() -> None:
    service = scene_service()
    assert set(BUILTIN_SCENES) <= set(service.names())
    data = service.get("data").flow
    kinds = [op.kind for op in data.nodes.values()]
    assert kinds == [
        "scene_request",
        "datasource_connect",
        "text2sql_ground",
        "text2sql_link",
        "text2sql_prompt",
        "text2sql_generate",
        "text2sql_vote",
        "scene_present",
        "scene_summarise",
        "scene_answer",
    ]
    # What each scene needs from a server and reads from a request, from its operators.
    assert service.get("knowledge").needs == {"knowledge"} and service.get("knowledge").inputs == ["space"]
    assert service.get("agent").needs == {"data", "agents"}
    assert service.get("data").inputs == ["datasource", "style"] and "file" in service.get("excel").inputs
    assert service.get("chat").needs == frozenset() and service.get("chat").inputs == []
    # The modules register their operators in the one operator registry, as plugins do.
    for kind in ("datasource_connect", "sql", "text2sql_vote", "cache_lookup", "rag_retrieve", "agent_run"):
        assert kind in OPERATORS


@pytest.mark.parametrize("name", sorted(BUILTIN_SCENES))
def test_each_scene_round_trips_through_json_and_the_dsl(name: str) -> None:
    flow = scene_service().get(name).flow
    assert DAG.from_json(flow.to_json()) == flow
    (again,) = compile_dsl(to_dsl(flow))
    ours, theirs = flow.to_dict(), again.to_dict()
    assert [n | {"id": n["id"]} for n in theirs["nodes"]] == ours["nodes"] and theirs["edges"] == ours["edges"]


def test_the_dsl_writer_refuses_what_it_cannot_write() -> None:
    with DAG("joined") as dag:
        a, b = InputOperator(name="a"), InputOperator(name="b")
        [a, b] >> JoinOperator(lambda x, y: x, name="both")  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="2 inputs; the DSL writes chains"):
        to_dsl(dag)


async def test_a_scene_streams_its_operators_events_in_order(tmp_path: Path, scripted: ScriptedFactory) -> None:
    sources = DataSources(DataSettings(), tmp_path / "home")
    manager = await scripted([SQL_REPLY, "Online has the most customers."])
    ctx = ChatContext(manager, "s", sources, DataSettings())
    try:
        events = [e async for e in scene_service().events("data", ctx, SceneRequest("How many customers per segment?"))]
    finally:
        await sources.close()
    steps = [e.name for e in events if isinstance(e, StepEvent)]
    assert steps == ["text2sql", "schema", "attempt"]
    kinds = [e.type for e in events]
    assert kinds[-1] == "done" and kinds.index("sql") < kinds.index("table") < kinds.index("chart")
    text = "".join(e.delta for e in events if isinstance(e, TextEvent))
    done = events[-1]
    assert isinstance(done, DoneEvent) and isinstance(done.answer, dict)
    assert done.answer["text"] == text.strip() == "Online has the most customers."


async def test_bad_requests_fail_before_anything_streams(tmp_path: Path, scripted: ScriptedFactory) -> None:
    sources = DataSources(DataSettings(), tmp_path / "home")
    ctx = ChatContext(await scripted(["x"]), "s", sources, DataSettings())
    try:
        with pytest.raises(InvalidRequestError, match="unknown chat scene 'dat' \\(did you mean 'data'"):
            scene_service().events("dat", ctx, SceneRequest("q"))
        with pytest.raises(InvalidRequestError, match="question is empty"):
            scene_service().events("data", ctx, SceneRequest("  "))
        # A module's own error keeps its type through the flow (not wrapped as a node failure).
        events = scene_service().events("db_qa", ctx, SceneRequest("tables?", datasource="nowhere"))
        with pytest.raises(DataPilotError) as caught:
            await events.__anext__()
        assert caught.value.status_code == 404 and not isinstance(caught.value, NodeError)
    finally:
        await sources.close()


async def test_a_changed_copy_is_served_as_a_new_scene(tmp_path: Path, scripted: ScriptedFactory) -> None:
    text = scene_text(scene_service().get("data").flow, "dsl").replace("max_tokens = 80", "max_tokens = 5")
    service = SceneService(tmp_path / "scenes")
    with pytest.raises(InvalidRequestError, match="built-in scene"):
        service.save("data", text, "dsl")
    scene = service.save("terse_data", text, "dsl")
    assert scene.origin.endswith("terse_data.dsl") and (tmp_path / "scenes" / "terse_data.dsl").is_file()
    # A fresh service (a restarted server) finds it in its folder; a service with another home does not.
    assert "terse_data" in SceneService(tmp_path / "scenes").load_folder()
    assert "terse_data" not in SceneService(tmp_path / "elsewhere").names()
    assert "terse_data" not in scene_service().names()
    sources = DataSources(DataSettings(), tmp_path / "home")
    manager = await scripted([SQL_REPLY, "Online has the most customers."])
    try:
        answer = await service.answer(
            "terse_data", ChatContext(manager, "s", sources, DataSettings()), SceneRequest("Customers per segment?")
        )
    finally:
        await sources.close()
    assert answer["table"]["rows"][0] == ["Online", 43]
    summarise = service.get("terse_data").flow.node("summarise")
    assert summarise.params() == {"max_tokens": 5}
    with pytest.raises(Exception, match="unknown operator 'nope'"):
        service.save("broken", text.replace("scene_summarise", "nope"), "dsl")
    assert "broken" not in service.names()


def test_flow_cli_lists_shows_and_serves_scenes(tmp_path: Path) -> None:
    from datapilot.cli.main import app

    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    listed = runner.invoke(app, ["flow", "list", *home])
    assert listed.exit_code == 0, listed.output
    assert all(f"scene:{name}" in listed.output for name in BUILTIN_SCENES)
    shown = runner.invoke(app, ["flow", "show", "scene:db_qa", "--format", "dsl", *home])
    assert shown.exit_code == 0 and "TRANSFORM connect USING db_qa_answer(max_tokens = 120);" in shown.output
    copy = tmp_path / "short.dsl"
    copy.write_text(shown.output.replace("max_tokens = 120", "max_tokens = 40"), encoding="utf-8")
    served = runner.invoke(app, ["flow", "serve", str(copy), "--as-scene", "short_qa", *home])
    assert served.exit_code == 0, served.output
    assert "scene:short_qa" in runner.invoke(app, ["flow", "list", *home]).output
    shown = runner.invoke(app, ["flow", "show", "scene:short_qa", "--format", "json", *home])
    assert '"max_tokens": 40' in shown.output


async def test_run_events_streams_as_operators_emit_and_raises_after_them() -> None:
    class Emit(BaseOperator):
        async def execute(self, inputs: list[Any], ctx: Any) -> Any:
            ctx.emit({"seen": inputs[0]})
            if inputs[0] == "boom":
                raise ValueError("boom")
            return inputs[0]

    with DAG("emitting") as dag:
        InputOperator() >> Emit(name="emit")
    assert [e async for e in dag.run_events("a")] == [{"seen": "a"}]
    seen: list[Any] = []
    with pytest.raises(NodeError, match="boom"):
        async for e in dag.run_events("boom"):
            seen.append(e)
    assert seen == [{"seen": "boom"}]
    assert await dag.run("b") == "b"  # a plain run drops the events


async def test_cache_operators_use_the_semantic_cache(tmp_path: Path, scripted: ScriptedFactory) -> None:
    from datapilot.awel import ChatOperator, FlowResources, LLMOperator, MergeOperator, TextOutputParser

    manager = await scripted(["Paris.", "Rome."], name="m")
    settings = CacheSettings.model_validate({"similarity_threshold": 0.95})
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        client = CachedLLMClient(manager, cache)
        with DAG("cached", resources=FlowResources(llm=manager, caches={"default": client})) as dag:
            request = InputOperator() >> ChatOperator(model="m", temperature=0.0)
            lookup = CacheLookupOperator(hit="answer", miss="model")
            model, answer = LLMOperator(name="model"), MergeOperator(name="answer")
            request >> lookup >> [model, answer]
            model >> CacheStoreOperator() >> answer
            answer >> TextOutputParser()
        assert await dag.run("What is the capital of France?") == "Paris."
        await client.drain()
        # The same question again: answered by the cache, the model's next reply ("Rome.") unused.
        assert await dag.run("What is the capital of France?") == "Paris."


async def test_the_sql_operator_runs_through_a_connector_and_its_guard(tmp_path: Path) -> None:
    from datapilot.awel import SQLOutputParser

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table orders (id integer primary key, item text, qty integer)")
        conn.executemany("insert into orders (item, qty) values (?, ?)", [("pen", 3), ("ink", 1), ("pad", 7)])
    sources = DataSources(DataSettings(), tmp_path / "home")
    await sources.add(DataSourceConfig(name="shop", kind="sqlite", path=str(db)))
    ctx = ChatContext(None, "s", sources, DataSettings())  # type: ignore[arg-type]
    try:
        with DAG("sql", resources=ctx) as dag:
            InputOperator() >> SQLOutputParser() >> OPERATORS.get("sql")("shop", limit=2)
        result = await dag.run("Here:\n```sql\nSELECT item, qty FROM orders ORDER BY qty DESC;\n```")
        assert result.columns == ["item", "qty"] and [list(r) for r in result.rows] == [["pad", 7], ["pen", 3]]
        assert result.truncated
        with DAG("raw", resources=ctx) as raw:
            InputOperator() >> OPERATORS.get("sql")("shop")
        with pytest.raises(NodeError) as caught:
            await raw.run("DELETE FROM orders")
        assert isinstance(caught.value.__cause__, UnsafeSQLError)
    finally:
        await sources.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from orders").fetchone()[0] == 3  # nothing changed


def test_scene_run_overhead_is_measured_in_the_benchmark() -> None:
    # Speed lives in benchmarks/scene_flow.py; here only that it runs on a tiny input.
    import runpy

    mod = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "scene_flow.py"), run_name="not_main")
    p50 = asyncio.run(mod["measure"](calls=20))
    assert set(p50) == {"flow_ms", "direct_ms", "added_ms"}


SQL_FLOW = """
CREATE WORKFLOW shop_rows AS
BEGIN
  DATA req = RECEIVE REQUEST FROM http_trigger("/shop/rows", method = "post");
  DATA rows = TRANSFORM req USING sql(datasource = "shop", limit = 2);
  RESPOND TO req WITH rows;
END;
"""


def test_the_server_serves_scenes_and_its_flows_query_sources_through_the_guard(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from datapilot.core.config import AWELSettings, CacheEmbedderConfig, ModelConfig, Settings
    from datapilot.server.app import create_app

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table orders (id integer primary key, item text, qty integer)")
        conn.executemany("insert into orders (item, qty) values (?, ?)", [("pen", 3), ("ink", 1), ("pad", 7)])
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "shop.dsl").write_text(SQL_FLOW, encoding="utf-8")
    hashed = CacheEmbedderConfig(kind="hash")
    settings = Settings(
        home=tmp_path / "home",
        models=[ModelConfig(name="s", backend="scripted", params={"replies": [SQL_REPLY, "Online leads."]})],
        awel=AWELSettings(flows_dir=flows, databases={"shop": db}),
        cache=CacheSettings(embedders={"default": hashed}),
        data=DataSettings(embedder=hashed),
    )
    app = create_app(settings)
    with TestClient(app) as client:
        # A flow's sql node reads a source registered from [awel] databases, read-only.
        got = client.post("/api/v1/awel/trigger/shop/rows", json={"sql": "SELECT item FROM orders ORDER BY qty"})
        assert got.status_code == 200, got.text
        assert "pen" in got.text and "pad" not in got.text  # the row limit of 2
        refused = client.post("/api/v1/awel/trigger/shop/rows", json={"sql": "DELETE FROM orders"})
        assert refused.status_code == 400 and "read" in refused.text.lower()
        # The scenes are listed with their flows, and a changed copy is served as a new one.
        listed = client.get("/api/chat/scenes").json()
        assert set(BUILTIN_SCENES) <= set(listed["data"])
        shown = client.get("/api/chat/scenes/data", params={"format": "dsl"}).json()
        body = {"name": "terse", "flow": shown["flow"].replace("max_tokens = 80", "max_tokens = 9"), "format": "dsl"}
        made = client.post("/api/chat/scenes", json=body)
        assert made.status_code == 201 and made.json()["nodes"][-1] == "answer"
        assert client.post("/api/chat/scenes", json=body).status_code == 400  # taken: replace is explicit
        bad = client.post("/api/chat/scenes", json={**body, "name": "bad", "flow": "CREATE WORKFLOW x AS BEGIN"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        answer = client.post("/api/chat", json={"scene": "terse", "question": "Customers per segment?"}).json()
        assert answer["scene"] == "terse" and answer["table"]["rows"][0] == ["Online", 43]
        # The source's schema linker is kept across requests (its vectors are not rebuilt per request).
        linker = app.state.services.data.linkers["sample"]
        again = client.post("/api/chat", json={"scene": "data", "question": "Customers per segment?"}).json()
        assert again["table"]["rows"][0] == ["Online", 43]
        assert app.state.services.data.linkers["sample"] is linker
        unknown = client.post("/api/chat", json={"scene": "terse2", "question": "q"})
        assert unknown.status_code == 400 and "did you mean 'terse'" in unknown.json()["error"]["message"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from orders").fetchone()[0] == 3
    assert (tmp_path / "home" / "scenes" / "terse.dsl").is_file()


def test_the_scenes_default_model_is_the_one_that_measured_best() -> None:
    """SmolLM2 when it is configured (and, on a server, ready); the request, the source's own SQL model
    and ``data.model`` still come first; without SmolLM2 the first chat model, as before."""
    from datapilot.apps.services import choose_chat_model
    from datapilot.core.config import DEFAULT_CHAT_MODEL, SMOLLM2_CHAT_MODEL, ModelConfig, Settings
    from datapilot.core.types import ModelInfo

    both = Settings()  # the embedded defaults: Gemma first, then SmolLM2
    assert [m.name for m in both.models][:1] == [DEFAULT_CHAT_MODEL]
    assert choose_chat_model(both, None, None, None) == SMOLLM2_CHAT_MODEL
    assert choose_chat_model(both, DEFAULT_CHAT_MODEL, None, None) == DEFAULT_CHAT_MODEL
    chosen = Settings.model_validate({"data": {"model": DEFAULT_CHAT_MODEL}})
    assert choose_chat_model(chosen, None, None, None) == DEFAULT_CHAT_MODEL
    gemma_only = Settings(models=[ModelConfig(name=DEFAULT_CHAT_MODEL, backend="llama_cpp")])
    assert choose_chat_model(gemma_only, None, None, None) == DEFAULT_CHAT_MODEL

    def served(smol_status: str) -> list[ModelInfo]:
        return [
            ModelInfo(name=DEFAULT_CHAT_MODEL, backend="llama_cpp", capabilities=["chat"], status="ready"),
            ModelInfo(name=SMOLLM2_CHAT_MODEL, backend="llama_cpp", capabilities=["chat"], status=smol_status),
        ]

    assert choose_chat_model(both, None, None, served("ready")) == SMOLLM2_CHAT_MODEL
    assert choose_chat_model(both, None, None, served("loading")) == DEFAULT_CHAT_MODEL
