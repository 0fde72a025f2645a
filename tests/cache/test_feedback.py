"""Feedback on cache hits: a wrong mark demotes the entry for that kind of probe at once, the marks move
the entry's own threshold towards the scope's target precision, and everything is stored, listed,
exported and deleted with its entry. The lookup tests run on the real bundled MiniLM."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from datapilot.cache import FeedbackRecord, HashEmbedder, Scope, SemanticCache, SentenceTransformerEmbedder
from datapilot.cache._feedback import entry_threshold, wilson_lower
from datapilot.core.config import CacheSettings, Settings
from datapilot.core.errors import InvalidRequestError, NotFoundError
from datapilot.server.cache_api import create_cache_app

from .conftest import hash_settings

STORED = "How do I reset my password?"
ANSWER = "Click 'Forgot password' on the sign-in page."


# --- the estimator -------------------------------------------------------------------------------------


def test_entry_threshold_tightens_at_once_and_loosens_only_with_enough_right_marks() -> None:
    base, target = 0.85, 0.95
    assert entry_threshold([], base, target) == base
    assert entry_threshold([(0.95, True)], base, target) == base  # right marks above the threshold: no change
    tight = entry_threshold([(0.90, False)], base, target)
    assert 0.90 < tight < 0.9001  # just above the wrong mark
    # above the wrong mark, right marks only confirm it; 19 right per wrong one reach 0.95 again
    assert entry_threshold([(0.90, False), *[(0.97, True)] * 18], base, target) == tight
    assert entry_threshold([(0.90, False), *[(0.97, True)] * 19], base, target) == base
    # below the scope's threshold nothing vouches: one right mark moves nothing, 19 (no wrong) do
    assert entry_threshold([(0.80, True)], base, target) == base
    assert entry_threshold([(0.80, True)] * 18, base, target) == base
    assert entry_threshold([(0.80, True)] * 19, base, target) == pytest.approx(0.80)
    assert entry_threshold([(0.80, True)] * 19 + [(0.81, False)], base, target) == base
    # bounded: never more than 0.10 below the scope's, never above 1
    assert entry_threshold([(0.70, True)] * 50, base, target) == base
    assert entry_threshold([(0.76, True)] * 50, base, target) == pytest.approx(0.76)
    assert entry_threshold([(1.0, False)], base, target) == 1.0
    # a laxer target needs fewer right marks
    assert entry_threshold([(0.90, False), *[(0.97, True)] * 4], base, 0.8) == base
    assert wilson_lower(0, 0) == 0.0 and wilson_lower(19, 19) == pytest.approx(0.95)


# --- lookups on MiniLM -----------------------------------------------------------------------------------


class _Shared:
    """The module's one MiniLM, lent to each test's cache (which closes the embedders it holds)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner, self.name = inner, inner.name

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await self.inner.embed(texts)


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder()
    embedder.load_sync()
    yield embedder
    asyncio.run(embedder.aclose())


@pytest.fixture
async def real(tmp_path: Path, minilm: SentenceTransformerEmbedder) -> AsyncIterator[SemanticCache]:
    # The similarities quoted in these tests are placed around a 0.85 threshold.
    settings = CacheSettings.model_validate({"defaults": {"threshold_short": 0.85, "threshold_long": 0.88}})
    cache = SemanticCache(settings, tmp_path, embedders={"default": _Shared(minilm)})
    async with cache:
        yield cache


async def test_a_wrong_mark_demotes_the_entry_for_that_kind_of_probe(real: SemanticCache) -> None:
    entry = await real.insert("m", STORED, ANSWER)
    wrong = "How do I reset my email password?"  # MiniLM: 0.86, over the 0.85 threshold
    hit = await real.query("m", wrong)
    assert hit.hit and hit.id == entry
    record = await real.feedback("m", entry, wrong, False)
    assert isinstance(record, FeedbackRecord) and record.id > 0 and record.right is False
    assert record.similarity == pytest.approx(hit.similarity, abs=1e-4) and record.question == STORED
    # the same probe, reworded by case and punctuation (same normalised text) or by words (cosine >= 0.95)
    for probe in (
        wrong,
        "how do I reset my email password!!",
        "  HOW do i reset my email password ",
        "How can I reset my email password?",
        "How do I reset the password of my email?",
    ):
        miss = await real.query("m", probe)
        assert not miss.hit and miss.reason == "feedback", (probe, miss.reason, miss.similarity)
    # the entry still answers its other probes
    for probe in (
        "how can I reset my password?",
        "How do I reset my account password?",
        "How do I change my password?",
    ):
        again = await real.query("m", probe)
        assert again.hit and again.id == entry, (probe, again.reason)
    # and only this entry is demoted: another entry answers the probe marked wrong for the first
    other = await real.insert("m", "How do I reset my email password?", "Use your mail provider's recovery page.")
    assert (await real.query("m", wrong)).id == other


async def test_wrong_marks_tighten_the_entry_threshold_and_right_marks_loosen_it(real: SemanticCache) -> None:
    entry = await real.insert("m", STORED, ANSWER)
    email = "How do I reset my email password?"  # 0.86
    change = "How do I change my password?"  # 0.88
    recover = "How do I recover my password?"  # 0.89
    assert (await real.query("m", email)).hit
    record = await real.feedback("m", entry, change, False)
    assert record.entry_threshold == pytest.approx(record.similarity, abs=1e-5) and record.similarity > 0.85
    assert real.entry_threshold("m", entry) == pytest.approx(record.entry_threshold)
    tightened = await real.query("m", email)  # the scope's threshold lets it through, the entry's own not
    assert not tightened.hit and tightened.reason == "entry_threshold"
    assert (await real.query("m", recover)).hit  # closer than the wrong mark: still answered

    # Below the scope threshold the entry answers only after enough right marks (19 at 0.95).
    loose = await real.insert(Scope("m", "loose"), STORED, ANSWER)
    near = "Steps to reset a forgotten password"  # 0.84: just under the 0.85 threshold
    assert (await real.query(Scope("m", "loose"), near)).reason == "below_threshold"
    for marks in range(1, 19):
        record = await real.feedback(Scope("m", "loose"), loose, near, True)
        assert record.entry_threshold == 0.85, marks
    assert not (await real.query(Scope("m", "loose"), near)).hit  # 18 right marks are not enough
    record = await real.feedback(Scope("m", "loose"), loose, near, True)
    assert record.entry_threshold == pytest.approx(record.similarity) and record.similarity < 0.85
    served = await real.query(Scope("m", "loose"), near)
    assert served.hit and served.id == loose
    further = await real.query(Scope("m", "loose"), "What do I do if I forgot my password?")  # 0.82: no mark there
    assert not further.hit and further.reason == "below_threshold"
    # one wrong mark there undoes the loosening at once
    await real.feedback(Scope("m", "loose"), loose, near, False)
    assert not (await real.query(Scope("m", "loose"), near)).hit
    # the other scope's entry never saw any of it
    assert real.entry_threshold("m", entry) == pytest.approx(0.8768, abs=1e-3)


async def test_the_target_precision_is_a_scope_setting(real: SemanticCache) -> None:
    assert real.policy("m").target_precision == 0.95
    policy = await real.set_policy("m", {"target_precision": 0.8})
    assert policy.target_precision == 0.8
    with pytest.raises(InvalidRequestError):
        await real.set_policy("m", {"target_precision": 0.3})
    entry = await real.insert("m", STORED, ANSWER)
    near = "Steps to reset a forgotten password"
    for _ in range(3):  # Wilson (z=1) of 3 of 3 is 0.75: not yet 0.8
        await real.feedback("m", entry, near, True)
    assert not (await real.query("m", near)).hit
    await real.feedback("m", entry, near, True)  # 4 of 4: 0.8
    assert (await real.query("m", near)).hit


# --- the core API on the hash embedder ----------------------------------------------------------------


async def test_bad_feedback_raises_and_stores_nothing(cache: SemanticCache) -> None:
    entry = await cache.insert(Scope("m", "a"), "What is the capital of France?", "Paris")
    for args, kw, error in [
        ((Scope("m", "b"), entry, "capital of France", False), {}, NotFoundError),  # another tenant's entry
        (("other", entry, "capital of France", False), {}, NotFoundError),
        ((Scope("m", "a"), entry + 100, "capital of France", False), {}, NotFoundError),
        ((Scope("m", "a"), "1", "capital of France", False), {}, InvalidRequestError),
        ((Scope("m", "a"), True, "capital of France", False), {}, InvalidRequestError),
        ((Scope("m", "a"), entry, "capital of France", "no"), {}, InvalidRequestError),
        ((Scope("m", "a"), entry, "capital of France", 0), {}, InvalidRequestError),
        ((Scope("m", "a"), entry, "   ", False), {}, InvalidRequestError),
        ((Scope("m", "a"), entry, [], False), {}, InvalidRequestError),
        ((Scope("m", "a"), entry, None, False), {"prompt": ""}, InvalidRequestError),
        ((Scope("m", "a"), entry, "capital of France", False), {"similarity": 3.0}, InvalidRequestError),
    ]:
        with pytest.raises(error):
            await cache.feedback(*args, **kw)
    for scope in (Scope("m", "a"), Scope("m", "b"), "other"):
        assert await cache.feedback_log(scope) == []
    assert (await cache.query(Scope("m", "a"), "What is the capital of France")).hit


async def test_eviction_deletes_the_feedback_of_evicted_entries(tmp_path: Path) -> None:
    cache = SemanticCache(hash_settings(max_entries=2), tmp_path, embedders={"default": HashEmbedder()})
    async with cache:
        first = await cache.insert("m", "What is the capital of France?", "Paris")
        await cache.feedback("m", first, "What is the capital of France", False)
        assert len(await cache.feedback_log("m")) == 1
        await cache.insert("m", "How tall is Mount Everest?", "8,849 m")
        await cache.insert("m", "Who wrote Hamlet?", "Shakespeare")  # evicts the least recently used: first
        assert await cache.feedback_log("m") == [] and await cache.feedback_pairs("m") == []
        assert cache._feedback[Scope("m").key].marks(first) is None


# --- over HTTP ---------------------------------------------------------------------------------------------


def _settings(home: Path) -> Settings:
    return Settings(
        home=home,
        cache={"embedders": {"default": {"kind": "hash"}}, "defaults": {"threshold_short": 0.6, "margin": 0.0}},
    )


def _insert(client: TestClient, scope: dict[str, Any], *questions: str) -> list[int]:
    entries = [{"prompt": q, "answer": f"answer to {q}"} for q in questions]
    resp = client.post("/api/cache/insert", json={"scope": scope, "entries": entries})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["ids"])


def _query(client: TestClient, scope: dict[str, Any], prompt: str) -> dict[str, Any]:
    return dict(client.post("/api/cache/query", json={"scope": scope, "prompt": prompt}).json())


def test_feedback_over_http_is_stored_listed_exported_and_deleted_with_its_entry(tmp_path: Path) -> None:
    scope = {"model": "m", "tenant": "t"}
    with TestClient(create_cache_app(_settings(tmp_path))) as client:
        france, hamlet = _insert(client, scope, "What is the capital of France?", "Who wrote Hamlet?")
        hit = _query(client, scope, "what is the capital of france")
        assert hit["hit"] and hit["id"] == france
        wrong = client.post(
            "/api/cache/feedback",
            json={**scope, "id": france, "prompt": "what is the capital of france", "right": False},
        )
        assert wrong.status_code == 200, wrong.text
        body = wrong.json()
        assert body["entry_id"] == france and body["right"] is False and isinstance(body["id"], int)
        assert body["entry_threshold"] <= 1.0 and body["similarity"] == pytest.approx(hit["similarity"], abs=1e-4)
        miss = _query(client, scope, "What is the capital of France")
        assert not miss["hit"] and miss["reason"] == "feedback"
        right = client.post(
            "/api/cache/feedback",
            json={
                **scope,
                "id": hamlet,
                "messages": [{"role": "user", "content": "who wrote hamlet"}],
                "right": True,
                "similarity": 0.97,
            },
        )
        assert right.status_code == 200 and right.json()["similarity"] == 0.97
        log = client.get("/api/cache/feedback", params=scope).json()["data"]
        assert [(r["entry_id"], r["right"]) for r in log] == [(hamlet, True), (france, False)]  # newest first
        assert log[1]["probe"] == "what is the capital of france"
        assert log[1]["question"] == "What is the capital of France?" and log[1]["scope"] == scope
        assert len(client.get("/api/cache/feedback", params={**scope, "limit": 1, "offset": 1}).json()["data"]) == 1
        assert client.get("/api/cache/feedback", params={"model": "m"}).json()["data"] == []  # another scope
        assert client.get("/api/cache/feedback", params=scope).json()["learned_rules"] == []  # one mark, no rule
        export = client.get("/api/cache/feedback/export", params=scope)
        assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
        assert "cache-feedback-m-t.jsonl" in export.headers["content-disposition"]
        pairs = [json.loads(line) for line in export.text.splitlines()]
        assert pairs == [
            {"a": "What is the capital of France?", "b": "what is the capital of france", "label": 0},
            {"a": "Who wrote Hamlet?", "b": "who wrote hamlet", "label": 1},
        ]

    with TestClient(create_cache_app(_settings(tmp_path))) as client:  # reopened: the marks are kept
        assert _query(client, scope, "what is the capital of france!")["reason"] == "feedback"
        assert len(client.get("/api/cache/feedback", params=scope).json()["data"]) == 2
        assert client.post("/api/cache/remove", json={"scope": scope, "ids": [france]}).json()["removed"] == 1
        log = client.get("/api/cache/feedback", params=scope).json()["data"]
        assert [r["entry_id"] for r in log] == [hamlet]
        assert len(client.get("/api/cache/feedback/export", params=scope).text.splitlines()) == 1
        # the question stored again is a new entry, with no marks
        (again,) = _insert(client, scope, "What is the capital of France?")
        assert _query(client, scope, "what is the capital of france")["id"] == again
        assert client.post("/api/cache/truncate", json={"scope": scope}).json()["removed"] == 2
        assert client.get("/api/cache/feedback", params=scope).json()["data"] == []
        assert client.get("/api/cache/feedback/export", params=scope).text == ""


def test_bad_feedback_over_http_gets_the_error_shape_and_stores_nothing(tmp_path: Path) -> None:
    scope = {"model": "m", "tenant": "t"}
    with TestClient(create_cache_app(_settings(tmp_path))) as client:
        (entry,) = _insert(client, scope, "What is the capital of France?")
        (elsewhere,) = _insert(client, {"model": "m"}, "Who wrote Hamlet?")
        probe = {"prompt": "what is the capital of france"}
        cases: list[tuple[dict[str, Any], int]] = [
            ({**scope, **probe, "right": False}, 400),  # no id
            ({**scope, **probe, "id": elsewhere, "right": False}, 404),  # another scope's entry
            ({**scope, **probe, "id": entry + 1000, "right": False}, 404),
            ({**scope, **probe, "id": str(entry), "right": False}, 400),
            ({**scope, "id": entry, "right": False}, 400),  # no probe
            ({**scope, "id": entry, "prompt": "  ", "right": False}, 400),
            ({**scope, "id": entry, "messages": [], "right": False}, 400),
            ({**scope, "id": entry, "messages": [{"role": "user", "content": ""}], "right": False}, 400),
            ({**scope, **probe, "id": entry, "messages": [{"role": "user", "content": "x"}], "right": False}, 400),
            ({**scope, **probe, "id": entry}, 400),  # no mark
            ({**scope, **probe, "id": entry, "right": "false"}, 400),
            ({**scope, **probe, "id": entry, "right": 0}, 400),
            ({**scope, **probe, "id": entry, "right": None}, 400),
            ({**scope, **probe, "id": entry, "right": True, "similarity": 2}, 400),
            ({**scope, **probe, "id": entry, "right": True, "note": "extra"}, 400),
            ({"tenant": "t", **probe, "id": entry, "right": True}, 400),  # no model
        ]
        for body, status in cases:
            resp = client.post("/api/cache/feedback", json=body)
            assert resp.status_code == status, (body, resp.text)
            error = resp.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], body
        for s in (scope, {"model": "m"}):
            assert client.get("/api/cache/feedback", params=s).json()["data"] == []
        assert client.get("/api/cache/feedback/export", params=scope).text == ""
        assert _query(client, scope, "what is the capital of france")["hit"]
        assert client.get("/api/cache/feedback", params={"model": "m", "limit": 0}).status_code == 400
        assert client.get("/api/cache/feedback", params={"tenant": "t"}).status_code == 400


# --- what the whole scope learns -----------------------------------------------------------------------


def _mark(entry_id: int, probe: str, question: str, right: bool) -> FeedbackRecord:
    return FeedbackRecord(0, "m", entry_id, probe, "", 0.9, right, 0.0, question=question)


def test_a_rule_is_learned_from_enough_wrong_marks_it_explains_and_unlearned_by_right_ones() -> None:
    from datapilot.cache._feedback import MIN_RULE_MARKS, ScopeFeedback

    numbers = [
        ("Convert 10 pounds to kilograms", "Convert 12 pounds to kilograms"),
        ("Top 5 movies of 2019", "Top 5 movies of 2021"),
        ("Is 17 a prime number?", "Is 19 a prime number?"),
    ]
    state = ScopeFeedback([_mark(i, p, q, False) for i, (q, p) in enumerate(numbers[:2])])
    assert state.learned_rules(0.95) == frozenset()  # two marks explain nothing yet
    state.add(_mark(3, numbers[2][1], numbers[2][0], False), 0.75, 0.95)
    assert MIN_RULE_MARKS == 3 and state.learned_rules(0.95) == {"numbers"}
    # A wrong mark no rule explains (a paraphrase judged wrong) teaches no rule.
    state.add(_mark(4, "how do I bake bread", "How can I bake bread?", False), 0.75, 0.95)
    assert state.learned_rules(0.95) == {"numbers"}
    # A hit marked right that the rule would have refused is evidence against it: at a 0.95 target one
    # such mark outweighs three wrong ones; at 0.75 it does not.
    state.add(_mark(5, "What is 2+2?", "What is two plus two? Answer in 1 word", True), 0.75, 0.95)
    assert state.learned_rules(0.95) == frozenset() and state.learned_rules(0.75) == {"numbers"}
    # Rebuilt from the stored marks (a reopened cache), the same.
    again = ScopeFeedback(
        [_mark(i, p, q, False) for i, (q, p) in enumerate(numbers)]
        + [_mark(5, "What is 2+2?", "What is two plus two? Answer in 1 word", True)]
    )
    assert again.learned_rules(0.75) == {"numbers"} and again.learned_rules(0.95) == frozenset()


async def _mark_three_of_four_wrong(cache: SemanticCache, pairs: list[tuple[str, str]]) -> list[int]:
    """Store each pair's question, check that each probe hits it, and mark the first three hits wrong."""
    ids = await cache.insert_many("m", [(q, f"a:{q}") for q, _ in pairs])
    hits = [await cache.query("m", p) for _, p in pairs]
    assert all(h.hit for h in hits)  # every near miss gets through
    for entry, (_, probe), hit in list(zip(ids, pairs, hits, strict=True))[:3]:
        await cache.feedback("m", entry, probe, False, similarity=hit.similarity)
    return ids


async def test_wrong_marks_teach_a_scope_without_the_verifier_its_rules(tmp_path: Path) -> None:
    # The verifier off: near misses that differ in a number hit, until the marks on three of them teach
    # the scope that numbers matter, for all its entries. Hash vectors: shared words make the cosine.
    pairs = [
        ("Convert 10 pounds to kilograms please", "Convert 12 pounds to kilograms please"),
        ("Show the top 5 movies of 2019 please", "Show the top 5 movies of 2021 please"),
        ("Is 17 a prime number or not", "Is 19 a prime number or not"),
        ("Book a table for 4 people tonight", "Book a table for 6 people tonight"),
    ]
    settings = hash_settings(guards=False)
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        await cache.insert("m", "How do I bake sourdough bread at home", "bread")
        ids = await _mark_three_of_four_wrong(cache, pairs)
        assert await cache.learned_rules("m") == ["numbers"]
        unmarked = await cache.query("m", pairs[3][1])
        assert not unmarked.hit and unmarked.reason == "feedback:numbers"
        # What the rule does not fire on still hits.
        assert (await cache.query("m", "how do i bake sourdough bread at home?")).answer == "bread"
        assert (await cache.query("m", "Book a table for 4 people tonight please")).id == ids[3]
    # Kept with the marks: a reopened cache knows the rule, and forgets it with the marked entries.
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        assert (await cache.query("m", pairs[3][1])).reason == "feedback:numbers"
        assert await cache.remove("m", ids[:3]) == 3
        assert await cache.learned_rules("m") == []
        assert (await cache.query("m", pairs[3][1])).id == ids[3]


async def test_wrong_marks_teach_a_scope_without_substitutions_that_one_replaced_word_matters(
    tmp_path: Path,
) -> None:
    pairs = [
        ("How long to grill chicken thighs on gas", "How long to grill chicken breasts on gas"),
        ("How do I revert a merge commit in git", "How do I revert a rebase commit in git"),
        ("Best way to store fresh basil leaves at home", "Best way to store fresh mint leaves at home"),
        ("How many grams of protein in a boiled egg", "How many grams of fat in a boiled egg"),
    ]
    settings = hash_settings(substitutions=False)
    async with SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}) as cache:
        ids = await _mark_three_of_four_wrong(cache, pairs)
        assert await cache.learned_rules("m") == ["term"]
        assert (await cache.query("m", pairs[3][1])).reason == "feedback:term"
        assert (await cache.query("m", "how many grams of protein in a boiled egg?")).id == ids[3]
