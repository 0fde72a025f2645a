"""The lexical channel for Chinese questions (``cache/_lexical``): its terms, its index, and the cache
finding and scoring Chinese entries by shared content terms next to the embedding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datapilot.cache import HashEmbedder, SemanticCache
from datapilot.cache import _lexical as lexical_module
from datapilot.cache._lexical import OFFSET, LexicalIndex, features, hybrid, overlap
from datapilot.core.config import CacheSettings

from .conftest import hash_settings

STORED = "洗衣机滚筒有异味怎么清洁？"
PROBE = "滚筒洗衣机有股异味要怎么清洁"  # the same question reworded: not a typing variant of it
OTHERS = [
    "高铁上可以带充电宝吗？",
    "怎么判断西瓜熟没熟？",
    "新买的绿萝叶子发黄怎么办？",
    "租房合同到期房东不退押金怎么办？",
    "考研英语作文怎么准备？",
    "空调开除湿模式省电吗？",
    "狗狗掉毛严重是什么原因？",
    "电动车电池冬天续航变短正常吗？",
    "咖啡喝多了心慌怎么办？",
    "微信聊天记录怎么迁移到新手机？",
    "宝宝晚上睡觉总是踢被子怎么办？",
    "信用卡逾期一天会影响征信吗？",
    "新房装修完多久可以入住？",
    "跑步膝盖疼要停跑多久？",
    "公积金贷款和商业贷款怎么选？",
    "How do I reverse a list in Python?",
]


def msg(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_terms_are_content_characters_pairs_and_latin_words_not_frames() -> None:
    terms = features("MySQL和PostgreSQL有什么区别？")
    assert terms == {"mysql", "postgresql"}  # "和", "有什么区别": particles and a question frame
    assert {"滚", "筒", "滚筒", "异味", "清洁"} <= features(STORED)
    assert features("What is the difference between MySQL and PostgreSQL?") == frozenset()
    # Two questions sharing only their frame share nothing.
    assert overlap(features("MySQL和PostgreSQL有什么区别？"), features("古筝和古琴有什么区别？")) == 0.0
    assert overlap(features(STORED), features(PROBE)) > 0.6
    assert overlap(features(STORED), frozenset()) == 0.0
    # Above the offset the lexical term adds to the cosine, below it takes away; weight 0 is the cosine.
    assert hybrid(0.5, OFFSET + 0.3, 1.0) > 0.5 > hybrid(0.5, OFFSET - 0.1, 1.0)
    assert hybrid(0.5, 0.9, 0.0) == 0.5


def test_the_index_follows_builds_inserts_and_removals() -> None:
    index = LexicalIndex()
    index.add("s", [(1, STORED)])  # not built yet: nothing is kept (a build reads every row later)
    assert not index.built("s") and index.search("s", features(PROBE), 3) == []
    index.build("s", [(i + 10, q) for i, q in enumerate(OTHERS)])
    assert 1 not in index.search("s", features(PROBE), 3)
    index.add("s", [(1, STORED)])
    assert index.search("s", features(PROBE), 3)[0] == 1
    assert index.search("other", features(PROBE), 3) == []  # scopes are apart
    index.remove("s", [1])
    assert 1 not in index.search("s", features(PROBE), 3)
    index.add("s", [(2, STORED)])
    assert index.search("s", features(PROBE), 3)[0] == 2
    postings = sum(len(ids) for ids in index._scopes["s"].postings.values())
    index.add("s", [(2, STORED)], from_rows=True)  # this process's insert, read again from the rows
    assert sum(len(ids) for ids in index._scopes["s"].postings.values()) == postings
    index.drop("s")
    assert not index.built("s") and index.search("s", features(PROBE), 3) == []


def test_removed_entries_are_compacted_out_of_the_postings() -> None:
    index = LexicalIndex()
    index.build("s", [(i, f"{q}第{i}号") for i, q in enumerate(OTHERS * 200)])
    scope = index._scopes["s"]
    before = sum(len(ids) for ids in scope.postings.values())
    index.remove("s", range(0, len(OTHERS) * 200 - 5))
    after = sum(len(ids) for ids in scope.postings.values())
    assert scope.dead < 1000 and after < before / 10  # compacted, not only marked
    assert set(index.search("s", features(OTHERS[-1]), 10)) <= set(scope.sizes)
    assert len(scope.sizes) == 5


async def test_a_chinese_entry_the_vectors_miss_is_found_by_its_terms(tmp_path: Path) -> None:
    # The hash embedder sees a Chinese sentence (no spaces) as one word: two different sentences are
    # orthogonal, so with top_k 2 among 17 entries the vector index alone cannot find the stored one.
    embedders = {"default": HashEmbedder(4096)}
    plain = SemanticCache(hash_settings(lexical_weight=0.0, top_k=2), tmp_path / "plain", embedders=embedders)
    async with plain:
        await plain.insert_many("m", [(msg(q), f"a:{q}") for q in [*OTHERS, STORED]])
        assert not (await plain.query("m", msg(PROBE))).hit

    cache = SemanticCache(hash_settings(lexical_weight=4.0, top_k=2), tmp_path / "lex", embedders=embedders)
    async with cache:
        ids = await cache.insert_many("m", [(msg(q), f"a:{q}") for q in [*OTHERS, STORED]])
        await cache.insert("other", msg(STORED), "other scope's")
        r = await cache.query("m", msg(PROBE))
        assert r.hit and r.answer == f"a:{STORED}" and r.hit_query == STORED
        assert 0.6 <= r.similarity <= 1.0  # reported as at most 1
        # A question sharing nothing with any entry is no hit; an English one is scored by its cosine alone.
        assert not (await cache.query("m", msg("周末去哪里爬山比较好"))).hit
        assert (await cache.query("m", msg("how do i reverse a list in python"))).hit

        assert await cache.remove("m", [ids[-1]]) == 1
        assert not (await cache.query("m", msg(PROBE))).hit  # the removed entry left the index too
        await cache.insert("m", msg(STORED), "again")
        assert (await cache.query("m", msg(PROBE))).answer == "again"  # an insert after the build is found

        await cache.truncate("m")
        assert not (await cache.query("m", msg(PROBE))).hit
        assert (await cache.query("other", msg(PROBE))).answer == "other scope's"


async def test_minilm_sharing_only_a_question_frame_scores_below_its_cosine(tmp_path: Path) -> None:
    stored = ["MySQL和PostgreSQL有什么区别？", "Redis为什么这么快？", "怎么给压缩包设置密码？"]
    sims = {}
    for weight in (0.0, CacheSettings().defaults.lexical_weight):
        settings = CacheSettings.model_validate({"defaults": {"lexical_weight": weight}})
        async with SemanticCache(settings, tmp_path / f"w{weight}") as cache:
            await cache.insert_many("m", [(msg(q), q) for q in stored])
            r = await cache.query("m", msg("古筝和古琴有什么区别？"))
            assert not r.hit
            sims[weight] = r.similarity
            reworded = await cache.query("m", msg("压缩包怎么设置密码"))
            assert reworded.hit and reworded.answer == "怎么给压缩包设置密码？"
    assert sims[CacheSettings().defaults.lexical_weight] < sims[0.0]


async def test_entries_another_process_adds_are_found_by_their_terms(tmp_path: Path, monkeypatch: Any) -> None:
    # Two caches on one store, as two server processes: b's insert reaches a's lexical index through the
    # rows (a's vector index, built at open, does not have it either).
    monkeypatch.setattr(lexical_module, "REFRESH_S", 0.0)
    settings = hash_settings(lexical_weight=4.0, top_k=2)
    async with (
        SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder(4096)}) as a,
        SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder(4096)}) as b,
    ):
        await a.insert_many("m", [(msg(q), q) for q in OTHERS])
        assert not (await a.query("m", msg(PROBE))).hit  # builds a's lexical index
        await b.insert("m", msg(STORED), "from b")
        r = await a.query("m", msg(PROBE))
        assert r.hit and r.answer == "from b"
        # Removed through b: a's index still lists it, but its row is gone, so it answers nothing.
        assert await b.remove("m", [r.id or 0]) == 1
        assert not (await a.query("m", msg(PROBE))).hit
