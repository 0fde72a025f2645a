"""Feedback's effect on false hits: mark up to 50 hard-negative false hits "wrong" and probe again.

On a chat-pair set (default: the dev set), all stored questions go into one scope; every probe is
looked up; up to ``--marks`` hard-negative probes that got a (wrong) hit are marked wrong through
``SemanticCache.feedback``, as a user's thumbs-down would; then every probe is looked up again. The
report: the hard negatives' false-hit rate before and after (all of them, the marked ones, the
unmarked ones: what the scope learned beyond the marked entries), the verifier rules the marks taught
the scope, and recall on the cases that should hit, before and after.

The verifier already rejects most hard negatives at the defaults, so by default it is turned off here
(``--guards`` keeps it): the figure is what feedback alone does for a scope whose near misses got
through.

    .venv/bin/python benchmarks/cache_feedback.py [--data FILE] [--marks 50] [--guards]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from datapilot.cache import SemanticCache
from datapilot.cache._chatbench import ChatCase, Tally, default_chat_file, load_cases
from datapilot.cache._types import CacheResult, Scope
from datapilot.core.config import CacheSettings

SCOPE = Scope("feedback-bench")


async def _probe(cache: SemanticCache, cases: list[ChatCase]) -> list[CacheResult]:
    return [await cache.query(SCOPE, c.probe_messages(), log=False) for c in cases]


def _false(case: ChatCase, result: CacheResult) -> bool:
    return result.hit and not (case.hit and result.answer == case.id)


def _rate(pairs: list[tuple[ChatCase, CacheResult]]) -> str:
    n = len(pairs)
    bad = sum(_false(c, r) for c, r in pairs)
    return f"{bad}/{n} = {bad / n:.3f}" if n else "-"


def _recall(pairs: list[tuple[ChatCase, CacheResult]]) -> float:
    t = Tally()
    for c, r in pairs:
        t.add(c, r)
    return t.right / t.should_hit if t.should_hit else 0.0


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--marks", type=int, default=50)
    ap.add_argument("--guards", action="store_true", help="keep the verifier on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = args.data or default_chat_file()
    if data is None:
        print("no chat pairs: pass --data", file=sys.stderr)
        return 2
    cases = load_cases(data)
    with tempfile.TemporaryDirectory() as tmp:
        async with SemanticCache(CacheSettings(), Path(tmp)) as cache:
            await cache.set_policy(SCOPE, {"guards": args.guards})
            await cache.insert_many(SCOPE, [(c.stored_messages(), c.id) for c in cases if c.stored is not None])
            before = await _probe(cache, cases)
            marked: set[str] = set()
            for case, result in zip(cases, before, strict=True):
                if len(marked) >= args.marks:
                    break
                if case.kind == "hard_negative" and _false(case, result) and result.id is not None:
                    await cache.feedback(SCOPE, result.id, case.probe_messages(), False, similarity=result.similarity)
                    marked.add(case.id)
            after = await _probe(cache, cases)
            learned = await cache.learned_rules(SCOPE)
    hard_before = [(c, r) for c, r in zip(cases, before, strict=True) if c.kind == "hard_negative"]
    hard_after = [(c, r) for c, r in zip(cases, after, strict=True) if c.kind == "hard_negative"]
    report = {
        "data": str(data),
        "guards": args.guards,
        "marks": len(marked),
        "learned_rules": learned,
        "hard_negative_false_hits": {
            "before": _rate(hard_before),
            "after": _rate(hard_after),
            "marked_after": _rate([(c, r) for c, r in hard_after if c.id in marked]),
            "unmarked_before": _rate([(c, r) for c, r in hard_before if c.id not in marked]),
            "unmarked_after": _rate([(c, r) for c, r in hard_after if c.id not in marked]),
        },
        "recall": {
            "before": round(_recall(list(zip(cases, before, strict=True))), 4),
            "after": round(_recall(list(zip(cases, after, strict=True))), 4),
        },
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
