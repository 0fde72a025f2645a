"""The DSL, the fluent frame and JSON: one graph, round-trips, registry-only loading, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datapilot.awel import (
    DAG,
    BranchOperator,
    DSLError,
    EmbeddingOperator,
    FlowLoadError,
    FlowResources,
    Frame,
    HttpSource,
    InputOperator,
    JoinOperator,
    LLMOperator,
    MapOperator,
    MergeOperator,
    RegistryError,
    RespondOperator,
    Retry,
    SerializationError,
    Skip,
    VectorRetrieveOperator,
    compile_dsl,
    parse_workflow,
    register_function,
)

ISSUE_DSL = """
CREATE WORKFLOW RAG AS
BEGIN
  DATA requestData = RECEIVE REQUEST FROM http_source("/examples/rags", method = "post");
  DATA processedData = TRANSFORM requestData USING embedding(model = "text2vec");
  DATA retrievedData = RETRIEVE DATA FROM vstore(database = "chromadb", key = processedData) ON ERROR FAIL;
  DATA modelResult = APPLY LLM "vicuna-13b" WITH DATA retrievedData AND PARAMETERS (temperature = 0.7)
    ON ERROR RETRY 2 TIMES;
  RESPOND TO http_source WITH modelResult ON ERROR LOG "Failed to respond to request";
END;
"""


def test_the_issue_dsl_compiles() -> None:
    dag = parse_workflow(ISSUE_DSL)
    assert dag.name == "RAG"
    assert list(dag.nodes) == ["requestData", "processedData", "retrievedData", "modelResult", "respond"]
    assert dag.edges() == [
        ("requestData", "processedData", 0),
        ("processedData", "retrievedData", 0),
        ("retrievedData", "modelResult", 0),
        ("modelResult", "respond", 0),
    ]
    model = dag.nodes["modelResult"]
    assert isinstance(model, LLMOperator) and model.model == "vicuna-13b" and model.temperature == 0.7
    assert model.on_error == Retry(2)
    assert dag.nodes["respond"].on_error == Skip("Failed to respond to request")
    assert dag.to_dict()["nodes"][2]["params"] == {"store": "chromadb", "k": 4}


def _issue_by_frame() -> DAG:
    source = HttpSource("/examples/rags", method="post", name="requestData")
    return (
        Frame(source, name="RAG")
        .text2vec(model="text2vec", name="processedData")
        .filter(database="chromadb", name="retrievedData")
        .llm(model="vicuna-13b", temperature=0.7, name="modelResult", on_error=Retry(2))
        .write_to(source, on_error=Skip("Failed to respond to request"))
        .build()
    )


def _issue_by_operators() -> DAG:
    with DAG("RAG") as dag:
        (
            HttpSource("/examples/rags", name="requestData")
            >> EmbeddingOperator("text2vec", name="processedData")
            >> VectorRetrieveOperator("chromadb", name="retrievedData")
            >> LLMOperator("vicuna-13b", 0.7, name="modelResult", on_error=Retry(2))
            >> RespondOperator(to="requestData", on_error=Skip("Failed to respond to request"))
        )
    return dag


def test_dsl_frame_and_operators_compile_to_the_same_graph() -> None:
    by_dsl = parse_workflow(ISSUE_DSL)
    assert by_dsl == _issue_by_frame()
    assert by_dsl == _issue_by_operators()
    assert by_dsl.to_dict() == _issue_by_frame().to_dict()


def test_json_round_trip_of_the_dsl_graph() -> None:
    dag = parse_workflow(ISSUE_DSL)
    text = dag.to_json()
    back = DAG.from_json(text)
    assert back == dag and back.to_json() == text
    node = json.loads(text)["nodes"][0]
    assert node == {
        "id": "requestData",
        "type": "http_trigger",
        "params": {"endpoint": "/examples/rags", "methods": ["POST"]},
        "ports": {"inputs": [], "output": "dict[str, Any]"},
    }


@register_function("test.double")
def double(x: int) -> int:
    return x * 2


@register_function("test.is_big")
def is_big(x: int) -> bool:
    return x > 10


@register_function("test.pair")
def pair(a: int, b: int) -> list[int]:
    return [a, b]


async def test_json_round_trip_of_an_operator_graph_runs_the_same() -> None:
    with DAG("ops", description="branches and joins") as dag:
        src = InputOperator()
        d = MapOperator(double, name="d", timeout=2.0)
        route = BranchOperator({"big": is_big, "small": "test.is_big"})
        big, small = MapOperator("identity", name="big"), MapOperator("test.double", name="small")
        src >> d >> route >> [big, small]
        [big, small] >> MergeOperator() >> MapOperator("to_text")
        src >> MapOperator("test.double", name="other") >> JoinOperator("test.pair", name="p")
        dag.nodes["d"] >> dag.nodes["p"]
    back = DAG.from_dict(json.loads(json.dumps(dag.to_dict())))
    assert back == dag
    assert back.nodes["d"].timeout == 2.0
    for x in (3, 30):
        assert await back.run(x, output="to_text") == await dag.run(x, output="to_text")


def test_lambdas_cannot_be_serialised_and_the_error_names_the_node() -> None:
    with DAG("lam") as dag:
        InputOperator() >> MapOperator(lambda x: x, name="anon")
    with pytest.raises(SerializationError, match=r"node 'anon'.*not in the function registry"):
        dag.to_json()


def test_json_resolves_names_only_through_the_registries() -> None:
    graph = parse_workflow(ISSUE_DSL).to_dict()
    graph["nodes"][1]["type"] = "os.system"
    with pytest.raises(RegistryError, match=r"unknown operator 'os.system'"):
        DAG.from_dict(graph)
    graph = {
        "name": "x",
        "nodes": [
            {"id": "i", "type": "input", "params": {}},
            {"id": "m", "type": "map", "params": {"fn": "builtins.eval"}},
        ],
        "edges": [{"source": "i", "target": "m"}],
    }
    with pytest.raises(RegistryError, match=r"unknown function 'builtins.eval'"):
        DAG.from_dict(graph)


def test_mermaid_export() -> None:
    text = parse_workflow(ISSUE_DSL).to_mermaid()
    assert text.startswith("flowchart TD")
    assert 'n0(["requestData<br/><small>http_trigger</small>"])' in text
    assert "n3 --> n4" in text


# DSL errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        (
            'CREATE WORKFLOW X AS\nBEGIN\n  DATA a = RECEIVE REQUEST FROM http_source("/x")\nEND;',
            4,
            1,
            ["unexpected 'END'", "expected ';', ON"],
        ),
        (
            'CREATE WORKFLOW X AS BEGIN\n DATA a = RECEIVE REQUEST FROM http_source("/x") ON ERROR RETRY TIMES; END;',
            2,
            65,
            ["unexpected 'TIMES'", "a whole number"],
        ),
        ("CREATE WORKFLOW", 1, 16, ["unexpected end of text", "expected a name"]),
        (
            'CREATE WORKFLOW X AS BEGIN DATA a = RECEIVE REQUEST FROM http_source("/x") @',
            1,
            76,
            ["unexpected character '@'"],
        ),
    ],
)
def test_syntax_errors_give_line_column_and_expected(text: str, line: int, column: int, words: list[str]) -> None:
    with pytest.raises(DSLError) as info:
        compile_dsl(text)
    err = info.value
    assert (err.line, err.column) == (line, column), err.message
    assert err.message.startswith(f"line {line}, column {column}: ")
    for w in words:
        assert w in err.message


def test_name_errors_give_line_and_column() -> None:
    with pytest.raises(DSLError) as info:
        compile_dsl('CREATE WORKFLOW X AS BEGIN\n  DATA a = RECEIVE REQUEST FROM http_sorce("/x");\nEND;')
    assert (info.value.line, info.value.column) == (2, 33)
    assert "unknown operator 'http_sorce' (did you mean 'http_source'?)" in info.value.message
    with pytest.raises(DSLError, match=r"line 3, column 22: DATA b is not defined \(defined so far: a\)"):
        compile_dsl(
            'CREATE WORKFLOW X AS BEGIN\n  DATA a = RECEIVE REQUEST FROM http_source("/x");\n'
            '  DATA c = TRANSFORM b USING embedding(model = "m");\nEND;'
        )
    with pytest.raises(DSLError, match=r"RESPOND TO nowhere: no request source"):
        compile_dsl(
            'CREATE WORKFLOW X AS BEGIN DATA a = RECEIVE REQUEST FROM http_source("/x");'
            " RESPOND TO nowhere WITH a; END;"
        )
    with pytest.raises(DSLError, match=r"bad arguments for embedding"):
        compile_dsl(
            'CREATE WORKFLOW X AS BEGIN DATA a = RECEIVE REQUEST FROM http_source("/x");'
            ' DATA b = TRANSFORM a USING embedding(colour = "red"); END;'
        )


async def test_unconfigured_model_or_store_fails_at_load_naming_it(resources: FlowResources) -> None:
    dag = parse_workflow(ISSUE_DSL)
    with pytest.raises(FlowLoadError) as info:
        await dag.check(resources)
    msg = info.value.message
    assert "'text2vec', which is not configured" in msg
    assert "'vicuna-13b', which is not configured" in msg
    assert "vector store 'chromadb', which is not configured (configured: embedded)" in msg
    ok = parse_workflow(
        ISSUE_DSL.replace("text2vec", "embed").replace("chromadb", "embedded").replace("vicuna-13b", "echo")
    )
    await ok.check(resources)


def test_example_flow_files_compile() -> None:
    folder = Path(__file__).resolve().parents[2] / "examples" / "flows"
    for name in ("rag.dsl", "ingest.dsl"):
        for dag in compile_dsl((folder / name).read_text()):
            assert DAG.from_json(dag.to_json()) == dag
