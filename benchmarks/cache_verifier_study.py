"""Would a verifier fitted on QQP's dev half make the cache more precise, or only fit QQP?

    .venv/bin/python benchmarks/cache_verifier_study.py [--dev-pairs 20000] [--test-pairs 5000]

Fits a logistic verifier on the dev half (cosine from the bundled MiniLM plus twelve lexical features:
word, content-word and bigram overlap, unmatched words, length, question word, and the guards'
numbers, negation, entity and direction checks), sets its threshold for recall 0.40 on dev, and then
reports, side by side with cosine alone at the same dev recall:

* pair-level precision at recall 0.40 on the test half (each pair scored on its own, no retrieval);
* the share of GPTCache's own paraphrase set (``gptcache_mock.jsonl.gz``) each accepts;
* the share of exact repeats (a test question asked again, word for word) each accepts.

QQP's negatives were chosen for their word overlap, so a verifier fitted on it learns that shared words
mean "different question". This is why the cache does not ship one: see docs/cache.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np

from datapilot.cache._bench import load_pairs
from datapilot.cache._embed import SentenceTransformerEmbedder
from datapilot.cache._guards import guard, parse
from datapilot.cache._train import precision_at_recall

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cache"
QUESTION_WORDS = frozenset("what why how when where who which whom whose".split())
NAMES = [
    "cosine",
    "content_jaccard",
    "word_jaccard",
    "only_in_query",
    "only_in_candidate",
    "length_ratio",
    "question_word_differs",
    "bigram_jaccard",
    "numbers",
    "negation",
    "entity_or_direction",
    "log_length",
]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _question_word(words: tuple[str, ...]) -> str:
    return next((w for w in words if w in QUESTION_WORDS), words[0] if words else "")


def features(query: str, candidate: str, cosine: float) -> list[float]:
    a, b = parse(query), parse(candidate)
    sa, sb = {_stem(w) for w in a.content}, {_stem(w) for w in b.content}
    wa, wb = set(a.words), set(b.words)
    ga, gb = set(zip(a.words, a.words[1:], strict=False)), set(zip(b.words, b.words[1:], strict=False))
    la, lb = len(a.words), len(b.words)
    why = guard(query, candidate)
    return [
        cosine,
        len(sa & sb) / max(1, len(sa | sb)),
        len(wa & wb) / max(1, len(wa | wb)),
        min(len(sa - sb), 4),
        min(len(sb - sa), 4),
        min(la, lb) / max(la, lb, 1),
        float(_question_word(a.words) != _question_word(b.words)),
        len(ga & gb) / max(1, len(ga | gb)),
        float(why == "numbers"),
        float(why == "negation"),
        float(why in ("entity", "direction")),
        math.log1p(la + lb),
    ]


async def _embed(embedder: SentenceTransformerEmbedder, texts: list[str], what: str) -> np.ndarray:
    out = []
    for start in range(0, len(texts), 512):
        out.append(np.asarray(await embedder.embed(texts[start : start + 512]), dtype=np.float32))
        print(f"\rembedding {what}: {min(start + 512, len(texts))}/{len(texts)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.vstack(out)


async def _pair_features(embedder: SentenceTransformerEmbedder, pairs: list[tuple[str, str]], what: str) -> np.ndarray:
    a = await _embed(embedder, [p[0] for p in pairs], f"{what} (stored)")
    b = await _embed(embedder, [p[1] for p in pairs], f"{what} (probes)")
    cosine = (a * b).sum(1)
    return np.array([features(q, c, float(s)) for (c, q), s in zip(pairs, cosine, strict=True)], dtype=np.float64)


def _threshold_for_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    positive = np.sort(scores[labels == 1])[::-1]
    return float(positive[min(len(positive) - 1, int(recall * len(positive)))])


async def study(dev_pairs: int, test_pairs: int, recall: float) -> None:
    from sklearn.linear_model import LogisticRegression

    dev = load_pairs(DATA / "qqp_dev.jsonl.gz", dev_pairs)
    test = load_pairs(DATA / "qqp_test.jsonl.gz", test_pairs)
    with gzip.open(DATA / "gptcache_mock.jsonl.gz", "rt") as f:
        mock = [(r["origin"], r["similar"]) for r in map(json.loads, f)]
    embedder = SentenceTransformerEmbedder()
    fd = await _pair_features(embedder, [(a, b) for a, b, _ in dev], "dev")
    ft = await _pair_features(embedder, [(a, b) for a, b, _ in test], "test")
    fm = await _pair_features(embedder, mock, "GPTCache mock")
    fx = np.array([features(a, a, 1.0) for a, _, _ in test], dtype=np.float64)
    yd = np.array([label for _, _, label in dev])
    yt = np.array([label for _, _, label in test])
    model = LogisticRegression(max_iter=5000).fit(fd, yd)
    print("\nlogistic verifier fitted on dev; its weights (the signs show what it learnt):")
    for name, weight in zip(NAMES, model.coef_[0], strict=True):
        print(f"  {name:24s} {weight:+.2f}")
    print(f"\n{'':28s}{'cosine':>10s}{'verifier':>10s}")
    verifier_dev = model.predict_proba(fd)[:, 1]
    t_cos, t_ver = _threshold_for_recall(fd[:, 0], yd, recall), _threshold_for_recall(verifier_dev, yd, recall)
    print(f"{'threshold (dev recall ' + f'{recall:.2f})':28s}{t_cos:10.3f}{t_ver:10.3f}")
    p_cos = precision_at_recall(ft[:, 0], yt, recall)
    p_ver = precision_at_recall(model.predict_proba(ft)[:, 1], yt, recall)
    print(f"{'test precision at that recall':28s}{p_cos:10.3f}{p_ver:10.3f}")
    m_cos, m_ver = (fm[:, 0] >= t_cos).mean(), (model.predict_proba(fm)[:, 1] >= t_ver).mean()
    print(f"{'GPTCache paraphrases taken':28s}{m_cos:10.3f}{m_ver:10.3f}")
    x_cos, x_ver = (fx[:, 0] >= t_cos).mean(), (model.predict_proba(fx)[:, 1] >= t_ver).mean()
    print(f"{'exact repeats taken':28s}{x_cos:10.3f}{x_ver:10.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev-pairs", type=int, default=20000)
    ap.add_argument("--test-pairs", type=int, default=5000)
    ap.add_argument("--recall", type=float, default=0.40)
    args = ap.parse_args()
    if not (DATA / "qqp_dev.jsonl.gz").is_file():
        sys.exit(f"no QQP data in {DATA}")
    asyncio.run(study(args.dev_pairs, args.test_pairs, args.recall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
