"""One ``Embedder`` seam and one ``VectorIndex`` seam (``datapilot.core.retrieval``): the cache, knowledge
retrieval and AWEL flows take the same index objects, and every package names the same protocols."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

import datapilot
import datapilot.awel as awel
import datapilot.cache as cache
import datapilot.core as core
import datapilot.retrieval as retrieval
from datapilot.awel import (
    DAG,
    EmbeddingOperator,
    FlowResources,
    InputOperator,
    VectorAddOperator,
    VectorRetrieveOperator,
)
from datapilot.core.config import CacheSettings, ModelConfig
from datapilot.core.retrieval import Embedder, Hit, VectorIndex
from datapilot.models import ModelManager
from datapilot.rag import KnowledgeBase, KnowledgeSettings
from datapilot.retrieval import FaissIndex, HashEmbedder, InMemoryVectorIndex

INDEXES: dict[str, Callable[[], VectorIndex]] = {"memory": InMemoryVectorIndex, "faiss": lambda: FaissIndex(None)}


@pytest.fixture(params=sorted(INDEXES))
def index(request: pytest.FixtureRequest) -> VectorIndex:
    made = INDEXES[request.param]()
    assert isinstance(made, VectorIndex)
    return made


def test_one_definition_of_each_seam() -> None:
    assert cache.Embedder is retrieval.Embedder is core.Embedder is Embedder
    assert cache.VectorIndex is retrieval.VectorIndex is awel.VectorIndex is core.VectorIndex is VectorIndex
    assert awel.Hit is retrieval.Hit is core.Hit is Hit
    assert cache.FaissIndex is retrieval.FaissIndex and cache.HashEmbedder is retrieval.HashEmbedder
    assert cache.make_embedder is retrieval.make_embedder
    # no other class of those names in the packages that use the seams
    root = Path(datapilot.__file__).parent
    defined = {
        (node.name, path.relative_to(root).as_posix())
        for package in ("core", "retrieval", "cache", "rag", "text2sql", "awel")
        for path in (root / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name in ("Embedder", "VectorIndex", "Hit")
    }
    assert defined == {(name, "core/retrieval.py") for name in ("Embedder", "VectorIndex", "Hit")}


def test_built_in_objects_fit_the_protocols() -> None:
    assert isinstance(HashEmbedder(), Embedder)
    assert isinstance(retrieval.SentenceTransformerEmbedder(), Embedder)  # loads nothing until used
    for index in (InMemoryVectorIndex(), FaissIndex(None)):
        assert isinstance(index, VectorIndex)
    assert not isinstance(awel.IndexedVectorStore(InMemoryVectorIndex()), VectorIndex)  # a store, not an index


def test_round_trip_on_the_index_itself(index: VectorIndex) -> None:
    vectors = np.eye(4, dtype=np.float32)
    index.add("a", np.array([10, 11, 12, 13]), vectors)
    index.add("b", np.array([20]), vectors[:1])
    ids, scores = index.search("a", vectors[2], 2)
    assert ids[0] == 12 and scores[0] == pytest.approx(1.0) and len(ids) == 2
    assert index.search("b", vectors[2], 5)[0] == [20]  # scopes never mix
    assert index.search("missing", vectors[0], 3) == ([], [])
    index.delete("a", [12])
    assert index.count("a") == 3 and 12 not in index.search("a", vectors[2], 4)[0]
    index.drop("a")
    assert index.count("a") == 0 and index.count("b") == 1
    assert index.restore("b", (1, 20, 20)) is False  # nothing persisted (faiss without a folder)
    index.close({})


async def test_the_cache_takes_the_index(index: VectorIndex, tmp_path: Path) -> None:
    settings = CacheSettings.model_validate(
        {"embedders": {"default": {"kind": "hash"}}, "defaults": {"threshold_short": 0.6, "threshold_long": 0.6}}
    )
    async with cache.SemanticCache(settings, tmp_path, index=index, embedders={"default": HashEmbedder()}) as c:
        await c.insert("m", prompt="What is the capital of France?", answer="Paris")
        assert c.index is index
        found = await c.query("m", prompt="What is the capital of France?")
        assert found.hit and found.answer == "Paris"
        assert not (await c.query("m", prompt="How tall is Everest?")).hit


async def test_knowledge_retrieval_takes_the_index(index: VectorIndex, tmp_path: Path) -> None:
    async with KnowledgeBase(KnowledgeSettings(), tmp_path, embedder=HashEmbedder(256), index=index) as kb:
        await kb.create_space("docs")
        added = [
            await kb.add_text("docs", "ocean", "The ocean is deep and blue."),
            await kb.add_text("docs", "trees", "Trees have green leaves in summer."),
        ]
        await kb.wait("docs", [d.id for d in added])
        passages = await kb.retrieve("docs", "deep blue ocean", k=1, mode="dense")
        assert passages[0].source == "ocean.txt"
        assert index.count("knowledge/docs") == 2


@pytest.fixture
async def scripted() -> AsyncIterator[ModelManager]:
    manager = ModelManager([ModelConfig(name="embed", backend="scripted")], Path("/nonexistent"))
    await manager.start()
    yield manager
    await manager.close()


async def test_awel_flows_take_the_index(index: VectorIndex, scripted: ModelManager) -> None:
    resources = FlowResources.embedded(scripted, index_factory=lambda: index)
    with DAG("ingest", resources=resources) as ingest:
        InputOperator() >> EmbeddingOperator("embed", field="texts") >> VectorAddOperator()
    got = await ingest.run({"texts": ["red apples grow on trees", "the ocean is deep and blue", "trees have leaves"]})
    assert got["added"] == 3 and index.count(awel.DEFAULT_VECTOR_STORE) == 3
    with DAG("search", resources=resources) as search:
        InputOperator() >> EmbeddingOperator("embed") >> VectorRetrieveOperator(k=2)
    found = await search.run({"question": "deep blue ocean"})
    assert found.documents[0].text == "the ocean is deep and blue"


async def test_one_index_object_serves_all_three(scripted: ModelManager, tmp_path: Path) -> None:
    shared = FaissIndex(None)
    settings = CacheSettings.model_validate({"embedders": {"default": {"kind": "hash"}}})
    async with cache.SemanticCache(settings, tmp_path / "c", index=shared, embedders={"default": HashEmbedder()}) as c:
        await c.insert("m", prompt="Define entropy", answer="disorder")
        async with KnowledgeBase(KnowledgeSettings(), tmp_path / "k", embedder=HashEmbedder(256), index=shared) as kb:
            await kb.create_space("docs")
            doc = await kb.add_text("docs", "note", "Entropy measures disorder.")
            await kb.wait("docs", [doc.id])
            store = awel.IndexedVectorStore(shared, scope="flow")
            store.add(np.eye(3, dtype=np.float32), ["x", "y", "z"])
            assert [h.payload for h in store.search(np.array([0, 1, 0]), 1)] == ["y"]
            assert (await kb.retrieve("docs", "entropy", k=1, mode="dense"))[0].source == "note.txt"
            assert (await c.query("m", prompt="Define entropy")).hit
            assert shared.count("knowledge/docs") == 1 and shared.count("flow") == 3
