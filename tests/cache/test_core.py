"""SemanticCache on the embedded store (SQLite + faiss) with the hash test embedder: the key, scopes,
guards, eviction, TTL, stats, atomic batches, persistence and concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from datapilot.cache import HashEmbedder, Scope, SemanticCache, SyncSemanticCache
from datapilot.core.errors import InvalidRequestError

from .conftest import hash_settings

SYSTEM = "You are a helpful assistant for a bank."


def chat(question: str, system: str | None = SYSTEM, history: list[tuple[str, str]] = ()) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    for user, assistant in history:
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*msgs, {"role": "user", "content": question}]


async def test_insert_then_reworded_query_hits(cache: SemanticCache) -> None:
    entry_id = await cache.insert("m", chat("What is the capital of France?"), "Paris")
    result = await cache.query("m", chat("what is the capital of France"))
    assert result.hit and result.answer == "Paris" and result.id == entry_id
    assert result.hit_query == "What is the capital of France?"
    assert result.similarity is not None and result.similarity > 0.6


async def test_scopes_isolate_models_and_tenants(cache: SemanticCache) -> None:
    await cache.insert(Scope("m", "acme"), chat("What is our refund policy?"), "acme: 30 days")
    await cache.insert(Scope("m", "globex"), chat("What is our refund policy?"), "globex: no refunds")
    assert (await cache.query(Scope("m", "acme"), chat("What is our refund policy?"))).answer == "acme: 30 days"
    assert (await cache.query(Scope("m", "globex"), chat("What is our refund policy?"))).answer == "globex: no refunds"
    assert not (await cache.query("m", chat("What is our refund policy?"))).hit
    assert not (await cache.query("other-model", chat("What is our refund policy?"))).hit
    # truncate touches one scope only
    assert await cache.truncate(Scope("m", "acme")) == 1
    assert not (await cache.query(Scope("m", "acme"), chat("What is our refund policy?"))).hit
    assert (await cache.query(Scope("m", "globex"), chat("What is our refund policy?"))).hit


async def test_system_prompt_is_part_of_the_key(cache: SemanticCache) -> None:
    await cache.insert("m", chat("Tell me a joke", system="You are a pirate. Answer like one."), "Arr!")
    assert not (await cache.query("m", chat("Tell me a joke", system="You are a formal butler."))).hit
    assert not (await cache.query("m", chat("Tell me a joke", system=None))).hit
    # trivially different wording of the same system prompt still hits
    assert (await cache.query("m", chat("Tell me a joke", system="you are a pirate.  answer like one"))).hit


async def test_same_follow_up_after_different_conversations_misses(cache: SemanticCache) -> None:
    paris = [("Tell me about Paris.", "Paris is the capital of France.")]
    berlin = [("Tell me about Berlin.", "Berlin is the capital of Germany.")]
    await cache.insert("m", chat("What is its population?", history=paris), "About 2.1 million.")
    assert not (await cache.query("m", chat("What is its population?", history=berlin))).hit
    hit = await cache.query("m", chat("what is its population", history=paris))
    assert hit.hit and hit.answer == "About 2.1 million."


async def test_near_misses_are_rejected(cache: SemanticCache) -> None:
    await cache.insert("m", chat("What is the capital of Austria?"), "Vienna")
    await cache.insert("m", chat("Convert 100 USD to EUR"), "92 EUR")
    austria = await cache.query("m", chat("What is the capital of Australia?"))
    assert not austria.hit and austria.reason.startswith("guard:")
    money = await cache.query("m", chat("Convert 250 USD to EUR"))
    assert not money.hit and money.reason == "guard:numbers"


async def test_params_are_part_of_the_key(cache: SemanticCache) -> None:
    await cache.insert("m", chat("Write a haiku"), "an old pond", params_key='{"seed":1}')
    assert (await cache.query("m", chat("Write a haiku"), params_key='{"seed":1}')).hit
    assert not (await cache.query("m", chat("Write a haiku"), params_key='{"seed":2}')).hit
    assert not (await cache.query("m", chat("Write a haiku"))).hit


async def test_prompts_and_short_long_thresholds(tmp_path: Path) -> None:
    settings = hash_settings(threshold_short=0.5, threshold_long=0.99, long_text_chars=40)
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        await cache.insert("m", prompt="Summarise the quarterly report for the board", answer="long")
        await cache.insert("m", prompt="Define entropy", answer="short")
        assert (await cache.query("m", prompt="Define entropy please")).hit
        long_q = await cache.query("m", prompt="Summarise the quarterly report for the board members")
        assert not long_q.hit and long_q.reason == "below_threshold"


async def test_ttl_expired_rows_are_not_served(tmp_path: Path) -> None:
    async with SemanticCache(hash_settings(ttl_s=0.2), tmp_path, embedders={"default": HashEmbedder()}) as cache:
        await cache.insert("m", chat("What time is it?"), "noon")
        assert (await cache.query("m", chat("What time is it?"))).hit
        await asyncio.sleep(0.3)
        assert not (await cache.query("m", chat("What time is it?"))).hit


@pytest.mark.parametrize("policy", ["lru", "lfu"])
async def test_eviction_keeps_the_scope_bounded(tmp_path: Path, policy: str) -> None:
    settings = hash_settings(max_entries=3, eviction=policy)
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        ids = [await cache.insert("m", chat(f"question about topic {w}"), f"answer {w}") for w in "abc"]
        # use "a" twice: it is both the most recently and the most frequently used
        for _ in range(2):
            assert (await cache.query("m", chat("question about topic a"))).hit
        await cache.stats("m")  # flushes the hit counters
        await cache.insert("m", chat("question about topic d"), "answer d")
        entries = {e.id: e for e in await cache.entries("m")}
        assert len(entries) == 3 and ids[0] in entries and ids[1] not in entries
        assert entries[ids[0]].hit_count == 2 and entries[ids[0]].last_hit_at is not None
        assert (await cache.query("m", chat("question about topic b"))).answer != "answer b"
        other = await cache.insert("other", chat("question about topic b"), "x")
        assert other and (await cache.stats("other")).entries == 1


async def test_stats_and_query_log(cache: SemanticCache) -> None:
    await cache.insert("m", chat("How do I reset my password?"), "Use the link.")
    for q in ("How do I reset my password?", "how do i reset my password", "What is a mortgage?"):
        await cache.query("m", chat(q))
    stats = await cache.stats("m")
    assert (stats.entries, stats.queries, stats.hits) == (1, 3, 2)
    assert stats.hit_rate == pytest.approx(2 / 3, abs=1e-3)
    assert stats.latency_p50_ms is not None and stats.latency_p99_ms is not None
    assert stats.lookup_p50_ms is not None and stats.latency_p99_ms >= stats.latency_p50_ms
    log = await cache.query_log("m", 10)
    assert [r.hit for r in log] == [False, True, True]
    assert log[1].hit_query == "How do I reset my password?" and log[1].similarity


async def test_a_bad_batch_writes_nothing(cache: SemanticCache) -> None:
    good = (chat("fine question"), "fine answer")
    for bad in [
        (chat("another"), ""),
        ([{"role": "user"}], "x"),
        ([], "x"),
        ([{"role": "wizard", "content": "hi"}], "x"),
    ]:
        with pytest.raises(InvalidRequestError):
            await cache.insert_many("m", [good, bad])
    assert (await cache.stats("m")).entries == 0
    with pytest.raises(InvalidRequestError):
        await cache.remove("m", ["1"])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError):
        await cache.query({"model": ""}, chat("x"))


async def test_per_scope_settings_do_not_leak(cache: SemanticCache) -> None:
    await cache.set_policy("strict", {"threshold_short": 0.999})
    assert cache.policy("strict").threshold_short == 0.999
    assert cache.policy("loose").threshold_short == 0.6
    for scope in ("strict", "loose"):
        await cache.insert(scope, chat("How do I open an account?"), "online")
    assert not (await cache.query("strict", chat("how can I open an account"))).hit
    assert (await cache.query("loose", chat("how can I open an account"))).hit
    with pytest.raises(InvalidRequestError):
        await cache.set_policy("strict", {"threshold_short": 7})
    assert cache.policy("strict").threshold_short == 0.999


async def test_persists_and_rebuilds_the_index(tmp_path: Path) -> None:
    settings = hash_settings()
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        await cache.insert_many("m", [(chat(f"question number {w}"), w) for w in ("one", "two", "three")])
    snapshot = list((tmp_path / "cache" / "faiss").glob("*.json"))
    assert snapshot, "a clean close leaves an index snapshot"
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        assert (await cache.query("m", chat("question number two"))).answer == "two"
        assert cache.index.count(Scope("m").key) == 3
    # rows written behind the snapshot's back: the signature no longer matches, the index is rebuilt
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        db.execute("DELETE FROM dp_cache_entries WHERE answer = 'one'")
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        assert cache.index.count(Scope("m").key) == 2
        assert not (await cache.query("m", chat("question number one"))).hit


async def test_concurrent_inserts_and_queries_lose_nothing(cache: SemanticCache) -> None:
    async def writer(i: int) -> int:
        return await cache.insert("m", chat(f"unique question {i} about item{i}"), f"answer {i}")

    async def reader(i: int) -> None:
        result = await cache.query("m", chat(f"unique question {i} about item{i}"))
        assert not result.hit or result.answer == f"answer {i}"  # never another row, never half a row

    results = await asyncio.gather(*(writer(i) for i in range(150)), *(reader(i) for i in range(150)))
    ids = [r for r in results if isinstance(r, int)]
    assert len(set(ids)) == 150
    assert (await cache.stats("m")).entries == 150
    for i in range(0, 150, 10):
        assert (await cache.query("m", chat(f"unique question {i} about item{i}"))).answer == f"answer {i}"


async def test_margin_rejects_ambiguous_probes(tmp_path: Path) -> None:
    async with SemanticCache(hash_settings(margin=0.2), tmp_path, embedders={"default": HashEmbedder()}) as cache:
        await cache.insert("m", chat("best pizza in town"), "A")
        await cache.insert("m", chat("best pizza in town ever"), "B")
        await cache.insert("m2", chat("best pizza in town"), "A")
        await cache.insert("m2", chat("really best pizza in town"), "B")
        result = await cache.query("m2", chat("best pizza in town today"))
        assert not result.hit and result.reason == "ambiguous"
        # A rival the verifier would not serve ("ever" replaced by "today") is no second meaning of the
        # probe: it does not make the probe ambiguous.
        assert (await cache.query("m", chat("best pizza in town today"))).answer == "A"
        # a copy of the same question is not a rival
        await cache.insert("m", chat("cheapest flights to Rome"), "C")
        await cache.insert("m", chat("Cheapest flights to Rome."), "C2")
        assert (await cache.query("m", chat("cheapest flights to Rome"))).hit
        # The question asked again is no near miss, however close a rival: "best pizza in town ever"
        # is 0.89 away from it, inside the margin, and the repeat still hits.
        repeat = await cache.query("m", chat("Best pizza in town?"))
        assert repeat.hit and repeat.answer == "A" and repeat.similarity is not None and repeat.similarity > 0.99


async def test_an_exact_repeat_skips_the_reranker(tmp_path: Path) -> None:
    class Never:
        threshold = 0.5
        calls = 0

        async def score(self, query: str, candidates: list[str]) -> list[float]:
            Never.calls += 1
            return [0.0 for _ in candidates]

    settings = hash_settings(reranker="never")
    async with SemanticCache(
        settings, tmp_path, embedders={"default": HashEmbedder()}, rerankers={"never": Never()}
    ) as cache:
        await cache.insert("m", chat("How do I bake bread at home?"), "knead")
        assert (await cache.query("m", chat("how do I bake bread at home"))).answer == "knead"
        assert Never.calls == 0
        refused = await cache.query("m", chat("how do I bake bread at home quickly"))
        assert not refused.hit and refused.reason == "reranker" and Never.calls == 1


def test_sync_wrapper(tmp_path: Path) -> None:
    with SyncSemanticCache(SemanticCache(hash_settings(), tmp_path, embedders={"default": HashEmbedder()})) as c:
        entry = c.insert("m", chat("What is DataPilot?"), "A platform.")
        assert c.query("m", chat("what is datapilot")).id == entry
        assert c.stats("m").entries == 1
        assert c.remove("m", [entry]) == 1
        assert not c.query("m", chat("What is DataPilot?")).hit


def test_embedding_windows_pool_long_texts() -> None:
    from datapilot.retrieval import pool_windows, word_windows

    text = " ".join(f"w{i}" for i in range(500))
    windows = word_windows(text, 200, 50)
    assert len(windows) == 3 and windows[0].split()[-50:] == windows[1].split()[:50]
    assert windows[-1].split()[-1] == "w499"
    v = np.eye(3, dtype=np.float32)
    pooled = pool_windows(v, [0, 0, 1], [1.0, 1.0, 1.0], 2)
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1.0) and pooled[0, 0] == pytest.approx(2**-0.5)


async def test_client_embedder_windows_long_inputs() -> None:
    from datapilot.cache import ClientEmbedder
    from datapilot.core.types import EmbeddingOutput, Usage

    class Counting:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        async def embed(self, model: str, texts: list[str]) -> EmbeddingOutput:
            self.calls.append(texts)
            return EmbeddingOutput(await HashEmbedder(64).embed(texts), Usage())

    client = Counting()
    embedder = ClientEmbedder(client, "e", window_words=100, overlap_words=20)
    out = await embedder.embed(["short text", " ".join(["word"] * 350)])
    assert out.shape == (2, 64) and len(client.calls[0]) == 1 + 5
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)


def test_scope_keys_cannot_collide() -> None:
    assert Scope("a", "b").key != Scope('a", "b').key
    assert Scope.parse({"model": "m", "user": "u"}) == Scope("m", "u")
    assert Scope.from_key(Scope("m", "t").key) == Scope("m", "t")
    started = time.perf_counter()
    for _ in range(1000):
        _ = Scope("m").key
    assert time.perf_counter() - started < 0.5


async def test_large_scopes_switch_to_ivf_and_stay_consistent(tmp_path: Path) -> None:
    from datapilot.cache import FaissIndex

    settings = hash_settings()
    index = FaissIndex(tmp_path / "cache" / "faiss", ivf_from=100)
    key = Scope("m").key
    async with SemanticCache(settings, tmp_path, index=index, embedders={"default": HashEmbedder()}) as cache:
        ids = await cache.insert_many("m", [(chat(f"ivf question {i} token{i}x"), f"a{i}") for i in range(60)])
        assert type(index._indexes[key]).__name__ == "IndexIDMap2"  # small: exact search
        ids += await cache.insert_many("m", [(chat(f"ivf question {i} token{i}x"), f"a{i}") for i in range(60, 120)])
        assert index._is_ivf(index._indexes[key]) and index._trained[key] == 120
        assert cache.index.count(key) == 120
        assert (await cache.query("m", chat("ivf question 7 token7x"))).answer == "a7"
        assert (await cache.query("m", chat("ivf question 100 token100x"))).answer == "a100"
        assert await cache.remove("m", ids[:10]) == 10  # IVF deletes for real
        assert cache.index.count(key) == 110
        assert (await cache.query("m", chat("ivf question 3 token3x"))).answer != "a3"
        # Growing four times past the training size clusters the scope anew, keeping every vector.
        await cache.insert_many("m", [(chat(f"ivf question {i} token{i}x"), f"a{i}") for i in range(120, 490)])
        assert index._trained[key] == 480 and cache.index.count(key) == 480
        assert (await cache.query("m", chat("ivf question 400 token400x"))).answer == "a400"
    index = FaissIndex(tmp_path / "cache" / "faiss", ivf_from=100)
    async with SemanticCache(settings, tmp_path, index=index, embedders={"default": HashEmbedder()}) as cache:
        assert cache.index.count(key) == 480  # restored from the snapshot, still IVF
        assert index._is_ivf(index._indexes[key]) and index._trained[key] == 480
        assert (await cache.query("m", chat("ivf question 99 token99x"))).answer == "a99"
