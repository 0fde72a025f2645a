"""The production stores: PostgreSQL and MariaDB for rows (real servers from the Debian packages),
Milvus (milvus-lite) for vectors. The same behaviour as the embedded store, tenants apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datapilot.cache import HashEmbedder, MilvusIndex, Scope, SemanticCache
from datapilot.core.errors import InvalidRequestError

from .conftest import hash_settings


def chat(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}]


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("pymilvus", reason="install datapilot[milvus]")
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(params=["postgres+milvus", "mariadb+milvus", "postgres+faiss", "mariadb+faiss"])
async def prod_cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SemanticCache]:
    rows, vectors = request.param.split("+")
    url = request.getfixturevalue(f"{rows}_url")
    store: dict[str, object] = {"sql_url": url, "vector": vectors}
    if vectors == "milvus":
        store["milvus_uri"] = request.getfixturevalue("milvus_uri")
    settings = hash_settings()
    settings.store = settings.store.model_validate(store)
    cache = SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()})
    async with cache:
        for scope in await cache.scopes():  # a shared server: start from an empty cache
            await cache.truncate(scope)
        yield cache


async def test_round_trip_and_tenant_isolation(prod_cache: SemanticCache) -> None:
    cache = prod_cache
    a = await cache.insert(Scope("m", "acme"), chat("What is the warranty period?"), "two years")
    await cache.insert(Scope("m", "globex"), chat("What is the warranty period?"), "one year")
    hit = await cache.query(Scope("m", "acme"), chat("what is the warranty period"))
    assert hit.hit and hit.answer == "two years" and hit.id == a
    assert (await cache.query(Scope("m", "globex"), chat("What is the warranty period?"))).answer == "one year"
    assert not (await cache.query(Scope("m"), chat("What is the warranty period?"))).hit
    assert await cache.truncate(Scope("m", "acme")) == 1
    assert not (await cache.query(Scope("m", "acme"), chat("What is the warranty period?"))).hit
    assert (await cache.query(Scope("m", "globex"), chat("What is the warranty period?"))).hit
    stats = await cache.stats(Scope("m", "globex"))
    assert stats.entries == 1 and stats.hits >= 1 and stats.latency_p50_ms is not None


async def test_remove_eviction_and_atomic_batches(prod_cache: SemanticCache) -> None:
    cache = prod_cache
    await cache.set_policy("small", {"max_entries": 5, "eviction": "lfu"})
    ids = await cache.insert_many("small", [(chat(f"numbered question {i} word{i}"), f"a{i}") for i in range(8)])
    assert len(ids) == 8 and (await cache.stats("small")).entries == 5
    assert await cache.remove("small", [ids[-1], 999_999_999]) == 1
    with pytest.raises(InvalidRequestError):
        await cache.insert_many("small", [(chat("ok question"), "ok"), (chat("no answer"), "")])
    assert (await cache.stats("small")).entries == 4


async def test_concurrent_clients_lose_no_write(prod_cache: SemanticCache) -> None:
    cache = prod_cache

    async def client(c: int) -> list[int]:
        out = []
        for i in range(10):
            out.append(await cache.insert("busy", chat(f"client {c} question {i} item{c}x{i}"), f"{c}/{i}"))
            result = await cache.query("busy", chat(f"client {c} question {i} item{c}x{i}"))
            assert result.hit and result.answer == f"{c}/{i}"
        return out

    ids = [i for batch in await asyncio.gather(*(client(c) for c in range(8))) for i in batch]
    assert len(set(ids)) == 80 and (await cache.stats("busy")).entries == 80


async def test_reopen_keeps_everything(prod_cache: SemanticCache, tmp_path: Path) -> None:
    await prod_cache.insert("persist", chat("Where is the head office?"), "Zurich")
    again = SemanticCache(prod_cache.settings, tmp_path / "other", embedders={"default": HashEmbedder()})
    async with again:
        assert (await again.query("persist", chat("Where is the head office?"))).answer == "Zurich"


async def test_feedback_is_kept_and_goes_with_its_entry(prod_cache: SemanticCache, tmp_path: Path) -> None:
    scope = Scope("fb", "acme")
    warranty = await prod_cache.insert(scope, chat("What is the warranty period?"), "two years")
    returns = await prod_cache.insert(scope, chat("How do I return an item?"), "Within 30 days.")
    await prod_cache.feedback(scope, warranty, chat("what is the warranty period"), False)
    await prod_cache.feedback(scope, returns, chat("how do I return an item"), True, similarity=0.9)
    assert (await prod_cache.query(scope, chat("What is the warranty period"))).reason == "feedback"
    again = SemanticCache(prod_cache.settings, tmp_path / "other", embedders={"default": HashEmbedder()})
    async with again:  # another process on the same stores reads the marks back
        assert (await again.query(scope, chat("what is the warranty period!"))).reason == "feedback"
        log = await again.feedback_log(scope)
        assert [(r.entry_id, r.right, r.question) for r in log] == [
            (returns, True, "How do I return an item?"),
            (warranty, False, "What is the warranty period?"),
        ]
        assert await again.feedback_pairs(scope) == [
            {"a": "What is the warranty period?", "b": "what is the warranty period", "label": 0},
            {"a": "How do I return an item?", "b": "how do I return an item", "label": 1},
        ]
        assert await again.remove(scope, [warranty]) == 1
        assert [r.entry_id for r in await again.feedback_log(scope)] == [returns]
        assert await again.truncate(scope) == 1
        assert await again.feedback_log(scope) == []


def test_milvus_index_keeps_collections_apart(milvus_uri: str) -> None:
    import numpy as np

    index = MilvusIndex(milvus_uri, prefix="dp_test_")
    try:
        v = np.eye(4, dtype=np.float32)
        index.add("a", np.array([1, 2]), v[:2])
        index.add("b", np.array([3]), v[:1])
        assert index.search("a", v[0], 5)[0][0] == 1
        assert index.search("b", v[0], 5)[0] == [3]
        index.delete("a", [1])
        assert index.search("a", v[0], 5)[0] == [2]
        assert index.count("a") == 1
        index.drop("a")
        assert index.search("a", v[0], 5) == ([], [])
    finally:
        index.drop("b")
