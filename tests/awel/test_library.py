"""Ready operators over the public APIs, on the scripted test model in-process."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from datapilot.awel import (
    DAG,
    EmbeddingOperator,
    FlowInputError,
    FlowResources,
    HttpTrigger,
    IndexedVectorStore,
    InputOperator,
    IteratorTrigger,
    JSONOutputParser,
    LLMOperator,
    MapOperator,
    NodeError,
    PromptTemplateOperator,
    TextOutputParser,
    VectorAddOperator,
    VectorRetrieveOperator,
)
from datapilot.core.types import ModelOutput, ModelRequest, Usage
from datapilot.models import ModelManager
from datapilot.retrieval import InMemoryVectorIndex


async def test_prompt_then_llm_through_the_client(resources: FlowResources) -> None:
    with DAG("chat", resources=resources) as dag:
        (
            InputOperator()
            >> PromptTemplateOperator("Tell me about {{ topic }}", system="Be brief.")
            >> LLMOperator("echo", temperature=0.1)
            >> TextOutputParser()
        )
    assert await dag.run({"topic": "owls"}) == "You said: Tell me about owls"
    with pytest.raises(NodeError, match=r"'prompt'.*template failed.*'topic' is undefined"):
        await dag.run({"subject": "owls"})


async def test_prompt_templates_are_sandboxed() -> None:
    with DAG("sandbox") as dag:
        InputOperator() >> PromptTemplateOperator("{{ x.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(NodeError, match=r"unsafe|template failed"):
        await dag.run({"x": "a"})


class CountingClient:
    """Wraps the manager to count model calls."""

    def __init__(self, inner: ModelManager) -> None:
        self.inner, self.calls = inner, 0

    async def generate(self, request: ModelRequest) -> ModelOutput:
        self.calls += 1
        return await self.inner.generate(request)

    def stream(self, request: ModelRequest):  # type: ignore[no-untyped-def]
        return self.inner.stream(request)

    async def models(self):  # type: ignore[no-untyped-def]
        return await self.inner.models()


async def test_embedding_index_and_retrieve(resources: FlowResources) -> None:
    with DAG("ingest", resources=resources) as ingest:
        InputOperator() >> EmbeddingOperator("embed", field="texts") >> VectorAddOperator()
    got = await ingest.run({"texts": ["red apples grow on trees", "the ocean is deep and blue", "trees have leaves"]})
    assert got["added"] == 3 and got["total"] == 3
    with DAG("search", resources=resources) as search:
        InputOperator() >> EmbeddingOperator("embed") >> VectorRetrieveOperator(k=2)
    found = await search.run({"question": "deep blue ocean"})
    assert found.query == "deep blue ocean"
    assert found.documents[0].text == "the ocean is deep and blue"
    assert found.documents[0].score > found.documents[1].score
    assert found.payload == {"question": "deep blue ocean"}


def test_indexed_vector_store() -> None:
    store = IndexedVectorStore(InMemoryVectorIndex())
    ids = store.add(__import__("numpy").eye(3, dtype="float32"), ["x", "y", "z"])
    assert [h.payload for h in store.search([0, 1, 0.1], 2)] == ["y", "z"]
    assert [h.payload for h in store.search([0, 1, 0.1], 1, filter=lambda p: p != "y")] == ["z"]
    assert store.delete(ids[:1]) == 1 and len(store) == 2
    store.add(__import__("numpy").eye(3, dtype="float32")[:1], ["y again"], ids=[ids[1]])  # same id: replaced
    assert len(store) == 2 and store.search([1, 0, 0], 1)[0].payload == "y again"


async def test_a_named_store_without_an_index_says_how_to_give_one(scripted: ModelManager) -> None:
    resources = FlowResources.embedded(scripted)  # no index_factory
    with DAG("ingest", resources=resources) as ingest:
        InputOperator() >> EmbeddingOperator("embed", field="texts") >> VectorAddOperator()
    with pytest.raises(NodeError, match="index_factory"):
        await ingest.run({"texts": ["a"]})


async def test_json_output_parser() -> None:
    with DAG("json") as dag:
        InputOperator() >> JSONOutputParser()
    out = ModelOutput('Sure! ```json\n{"a": [1, 2]}\n``` done', "stop", Usage())
    assert await dag.run(out) == {"a": [1, 2]}
    assert await dag.run('prefix [1, {"b": null}] suffix') == [1, {"b": None}]
    with pytest.raises(NodeError, match=r"no JSON found"):
        await dag.run("nothing here")


class Ask(BaseModel):
    question: str = Field(min_length=1)
    top_k: int = Field(3, ge=1, le=20)


def test_http_trigger_validates_into_the_request_model() -> None:
    trigger = HttpTrigger("/ask", request_body=Ask)
    assert trigger.parse({"question": "why?"}) == Ask(question="why?", top_k=3)
    with pytest.raises(FlowInputError) as info:
        trigger.parse({"question": "", "top_k": 99})
    err = info.value
    assert err.status_code == 400 and err.param == "question"
    assert err.message.startswith("invalid value for 'question': String should have at least 1 character")
    assert "(and 1 more problem)" in err.message
    body = err.to_dict()["error"]
    assert isinstance(body, dict)
    assert [d["loc"] for d in body["details"]] == [["question"], ["top_k"]]


async def test_iterator_trigger_runs_a_batch_with_progress() -> None:
    seen: list[tuple[int, int]] = []
    with DAG("batch"):
        trigger = IteratorTrigger(range(10), max_concurrency=3)
        trigger >> MapOperator(lambda x: x * x)
    results = await trigger.trigger(progress=lambda done, total: seen.append((done, total)))
    assert results == [x * x for x in range(10)]
    assert seen[-1] == (10, 10) and len(seen) == 10
