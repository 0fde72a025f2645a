"""The cache on chat traffic in both languages: typing variation, the key-term verifier, the chat-pair
benchmark and threshold calibration. The verifier cases are the kinds of ``benchmarks/data``'s sets,
written anew here (nothing copied from the sets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datapilot.cache import SemanticCache, guard
from datapilot.cache._chatbench import ChatScore, choose_threshold, load_cases, run_chat_bench
from datapilot.cache._key import context_fingerprint, normalise
from datapilot.cli import app
from datapilot.core.config import CacheSettings
from datapilot.core.errors import InvalidRequestError

TYPED_TWICE = [
    ("１０万元存一年利息多少？", "10万元存一年利息多少?"),
    ("如何用Python写爬虫？", "如何用 Python 写爬虫?"),
    ("《三体》讲了什么？？", "三体讲了什么？"),
    ("ＳＱＬ里ＧＲＯＵＰ ＢＹ怎么用", "SQL里GROUP BY怎么用"),
    ("你好，世界。", "你好,世界"),
    ("What does “git stash” do??", 'what does "git stash" do'),
    ("How do I exit Vim...", "How do I exit vim?"),
    ("  Is  WAL mode safe?!  ", "is wal mode safe"),
]


@pytest.mark.parametrize(("a", "b"), TYPED_TWICE)
def test_typing_variation_normalises_to_one_question(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)
    assert guard(a, b) is None
    assert context_fingerprint(f"user: {a}") == context_fingerprint(f"user: {b}")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("git reset --hard", "git reset --soft"),
        ("c++ 教程", "c# 教程"),
        ("3.5 km", "3.6 km"),
        ("中文", "日文"),
    ],
)
def test_normalising_keeps_what_tells_questions_apart(a: str, b: str) -> None:
    assert normalise(a) != normalise(b)


HARD_NEGATIVES = [
    ("春节高速公路免费几天？", "国庆节高速公路免费几天？", "holiday"),
    ("杭州西湖门票多少钱", "苏州园林门票多少钱", None),
    ("把这封邮件翻译成法语", "把这封邮件翻译成德语", "natural language"),
    ("孕妇可以喝咖啡吗", "孕妇不可以喝咖啡吗", "negation"),
    ("写五句关于大海的诗", "写八句关于大海的诗", "numbers"),
    ("Vue 2 的生命周期有哪些", "Vue 3 的生命周期有哪些", "numbers"),
    ("npm install 和 npm ci 有什么区别", "npm install 和 npm update 有什么区别", "term"),
    ("欧元兑日元的汇率", "日元兑欧元的汇率", "direction"),
    ("世界上最高的山是哪座", "世界上最深的海沟是哪个", "superlative"),
    ("How do I revert a merge commit in git?", "How do I revert a rebase in git?", "term"),
    ("Translate this paragraph into Spanish", "Translate this paragraph into Italian", "entity"),
    ("How many grams of protein are in an egg?", "How many grams of fat are in an egg?", "term"),
    ("Send an HTTP PUT request with curl", "Send an HTTP DELETE request with curl", None),
    ("What's the fastest land animal?", "What's the largest land animal?", "superlative"),
    ("Sort a dict by value in Python 3.12", "Sort a dict by value in Python 2.7", "numbers"),
    # Names that share one character: the alignment matches it by chance, and one name still replaced another.
    ("刘德华的代表作有哪些", "周华健的代表作有哪些", "term"),
    ("怎么给压缩包加上密码", "怎么给压缩包去掉密码", "direction"),
]


@pytest.mark.parametrize(("a", "b", "kind"), HARD_NEGATIVES)
def test_one_key_term_apart_is_rejected(a: str, b: str, kind: str | None) -> None:
    why = guard(a, b)
    assert why is not None, (a, b)
    if kind is not None:
        assert why == kind


PARAPHRASES = [
    ("怎么把字符串转成整数？", "如何将字符串转换为整数"),
    ("请问猫咪能吃葡萄吗？", "猫能吃葡萄吗"),
    ("西瓜怎么挑才甜", "挑西瓜有什么技巧才能甜"),
    ("Python 列表怎么去重", "python中列表如何去重"),
    ("把这句话翻译成英文：谢谢你", "“谢谢你”用英语怎么说"),
    ("How can I center a div with CSS?", "what's the way to center a div using css"),
    ("What is the capital of Canada?", "what's Canada's capital city"),
    ("How do I undo the last git commit?", "undo my last commit in git"),
    # Other spellings: "k8s" is no number 8, "℃" no programming language C; "里怎么" / "中如何" is two
    # known equivalents aligned as one span.
    ("k8s 里怎么查看 pod 日志", "Kubernetes 中如何查看 pod 的日志"),
    ("体温38.5℃要吃退烧药吗", "体温38.5度需要吃退烧药吗"),
    ("js 怎么深拷贝对象", "JavaScript 如何深拷贝一个对象"),
    ("帮我写一封辞职信", "写个辞职信"),
]


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_rewordings_keep_the_hit(a: str, b: str) -> None:
    assert guard(a, b) is None, (a, b)


SMALL_SET = [
    {
        "id": "t-zh-rep-1",
        "lang": "zh",
        "kind": "repeat_variant",
        "stored": "Ｄｏｃｋｅｒ怎么清理镜像？",
        "probe": "docker 怎么清理镜像?",
        "hit": True,
    },
    {
        "id": "t-en-rep-1",
        "lang": "en",
        "kind": "repeat_variant",
        "stored": "How do I boil an egg?",
        "probe": "how do i boil an egg??",
        "hit": True,
    },
    {
        "id": "t-zh-neg-1",
        "lang": "zh",
        "kind": "hard_negative",
        "stored": "北京到上海的高铁要多久",
        "probe": "北京到广州的高铁要多久",
        "hit": False,
        "why": "place",
    },
    {
        "id": "t-en-neg-1",
        "lang": "en",
        "kind": "hard_negative",
        "stored": "Convert 10 pounds to kilograms",
        "probe": "Convert 12 pounds to kilograms",
        "hit": False,
        "why": "number",
    },
    {
        "id": "t-en-para-1",
        "lang": "en",
        "kind": "paraphrase",
        "stored": "How do I reverse a list in Python?",
        "probe": "how to reverse a python list",
        "hit": True,
    },
    {
        "id": "t-en-ctx-1",
        "lang": "en",
        "kind": "context_different",
        "stored": "make it shorter",
        "probe": "make it shorter",
        "hit": False,
        "why": "other exchange",
        "stored_context": [
            {"role": "user", "content": "Write a poem about rain."},
            {"role": "assistant", "content": "Rain taps the glass all night long."},
        ],
        "probe_context": [
            {"role": "user", "content": "Write a cover letter for a bakery job."},
            {"role": "assistant", "content": "Dear hiring manager, I love bread."},
        ],
    },
    {
        "id": "t-en-unr-1",
        "lang": "en",
        "kind": "unrelated",
        "stored": None,
        "probe": "What is the tallest tree species?",
        "hit": False,
    },
]


def _write_set(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


async def test_the_chat_bench_scores_each_kind_and_language_on_minilm(tmp_path: Path) -> None:
    data = _write_set(tmp_path / "pairs.jsonl", SMALL_SET)
    report = await run_chat_bench(data, home=tmp_path / "home", thresholds=(0.5, 0.99))
    d = report.to_dict()
    kinds = d["default"]["by_kind"]
    assert kinds["repeat_variant/zh"]["recall"] == 1.0 and kinds["repeat_variant/en"]["recall"] == 1.0
    assert kinds["hard_negative/zh"]["false_hits"] == 0 and kinds["hard_negative/en"]["false_hits"] == 0
    assert kinds["context_different/en"]["false_hits"] == 0 and kinds["unrelated/en"]["hits"] == 0
    assert d["default"]["probes"] == len(SMALL_SET) and d["default"]["should_hit"] == 3
    assert set(d["default"]["by_lang"]) == {"en", "zh"}
    loose, strict = d["sweep"]
    # Exact repeats hit at any threshold; a strict threshold loses the paraphrase, never a repeat.
    assert strict["right_hits"] >= 2 and loose["right_hits"] >= strict["right_hits"]


def test_chat_pairs_with_a_bad_line_name_it(tmp_path: Path) -> None:
    bad = _write_set(
        tmp_path / "bad.jsonl", [SMALL_SET[0], {"id": "x", "lang": "en", "kind": "odd", "probe": "q", "hit": False}]
    )
    with pytest.raises(InvalidRequestError, match="line 2: kind must be one of"):
        load_cases(bad)
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"a": "去哪儿玩", "b": "哪里好玩", "label": 1}) + "\n", encoding="utf-8")
    (case,) = load_cases(plain)
    assert case.lang == "zh" and case.kind == "paraphrase" and case.hit


def test_the_threshold_chosen_is_the_one_with_most_right_hits_at_the_target() -> None:
    def score(label: str, hits: int, right: int) -> ChatScore:
        s = ChatScore(label)
        s.overall.hits, s.overall.right, s.overall.should_hit = hits, right, 20
        return s

    sweep = [score("0.60", 20, 15), score("0.70", 16, 15), score("0.80", 10, 10), score("0.90", 5, 5)]
    assert choose_threshold(sweep, 0.9).threshold == 0.70
    assert choose_threshold(sweep, 0.99).threshold == 0.80
    assert choose_threshold([score("0.60", 10, 5)], 0.9).threshold is None


def test_calibrate_applies_the_threshold_to_the_scope(tmp_path: Path) -> None:
    pairs = tmp_path / "labelled.jsonl"
    rows = [
        {"a": "How do I make pancakes?", "b": "how to make pancakes", "label": 1},
        {"a": "What is a python decorator?", "b": "explain python decorators", "label": 1},
        {"a": "Convert 3 feet to meters", "b": "Convert 4 feet to meters", "label": 0},
        {"a": "Best hiking trails near Denver", "b": "good hikes around denver", "label": 1},
    ]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    home = tmp_path / "home"
    runner = CliRunner()
    args = ["cache", "calibrate", "--pairs", str(pairs), "--target-precision", "0.9", "--home", str(home)]
    done = runner.invoke(app, [*args, "--model", "m", "--apply", "--json"])
    assert done.exit_code == 0, done.output
    chosen = json.loads(done.stdout)["threshold"]
    assert 0.5 <= chosen < 1.0

    async def applied() -> float:
        async with SemanticCache(CacheSettings(), home) as cache:
            return cache.policy({"model": "m"}).threshold_short

    import asyncio

    assert asyncio.run(applied()) == pytest.approx(chosen)
    refused = runner.invoke(app, [*args[:-2], "--apply"])
    assert refused.exit_code != 0 and "need --model" in f"{refused.output} {refused.exception}"


def test_calibrate_from_the_scopes_own_feedback(tmp_path: Path) -> None:
    import asyncio

    home = tmp_path / "home"

    async def mark() -> None:
        async with SemanticCache(CacheSettings(), home) as cache:
            a = await cache.insert("fb", "How do I make pancakes?", "Flour, eggs, milk.")
            b = await cache.insert("fb", "What is a python decorator?", "A function wrapping a function.")
            await cache.feedback("fb", a, "how to make pancakes", True)
            await cache.feedback("fb", b, "explain python decorators please", True)
            await cache.feedback("fb", a, "How do I make waffles?", False)

    asyncio.run(mark())
    runner = CliRunner()
    args = ["cache", "calibrate", "--from-feedback", "--model", "fb", "--home", str(home), "--json"]
    done = runner.invoke(app, [*args, "--target-precision", "0.9"])
    assert done.exit_code == 0, f"{done.output} {done.exception}"
    report = json.loads(done.stdout)
    assert report["threshold"] is not None and report["at_threshold"]["right_hits"] >= 1
    none = runner.invoke(app, ["cache", "calibrate", "--from-feedback", "--model", "nobody", "--home", str(home)])
    assert none.exit_code != 0 and "no feedback marks yet" in f"{none.output} {none.exception}"
    both = runner.invoke(app, ["cache", "calibrate", "--home", str(home)])
    assert both.exit_code != 0 and "--pairs FILE or --from-feedback" in f"{both.output} {both.exception}"
