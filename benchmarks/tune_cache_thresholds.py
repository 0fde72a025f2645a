"""Tune the semantic cache's default thresholds on QQP's dev half only (never the test half).

    .venv/bin/python benchmarks/tune_cache_thresholds.py [--pairs 5000] [--min-recall 0.42]

Stores the first ``--pairs`` dev questions in a throwaway cache with the bundled MiniLM, probes with
their paraphrases, and grids the thresholds a lookup uses (cosine for short and long questions, the
ambiguity margin, the guards on or off), printing the settings with the best hit precision at
recall >= ``--min-recall``. The defaults in ``datapilot.core.config`` (DEFAULT_CACHE_*) come from
this run; report figures on the test half with ``datapilot bench cache``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

from datapilot.cache import SemanticCache
from datapilot.cache._bench import SCOPE, load_pairs
from datapilot.cache._key import key_for_messages
from datapilot.core.config import CacheSettings

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "cache" / "qqp_dev.jsonl.gz"
SHORT = (0.80, 0.83, 0.85, 0.87, 0.90)
LONG = (0.85, 0.88, 0.90)
MARGINS = (0.0, 0.05, 0.10, 0.15)


async def tune(pairs: list[tuple[str, str, int]], min_recall: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with SemanticCache(CacheSettings(), Path(tmp)) as cache:
            await cache.insert_many(SCOPE, [(a, str(i)) for i, (a, _, _) in enumerate(pairs)])
            vectors = [(await cache.query(SCOPE, b, log=False)).vectors for _, b, _ in pairs]
            positives = sum(label for _, _, label in pairs)
            base = cache.policy(SCOPE)
            results = []
            for short, long, margin, guards in itertools.product(SHORT, LONG, MARGINS, (True, False)):
                policy = base.model_copy(
                    update={"threshold_short": short, "threshold_long": long, "margin": margin, "guards": guards}
                )
                hits = true_hits = 0
                for i, (_, b, label) in enumerate(pairs):
                    qvec, cvec = vectors[i]
                    result, _ = cache._lookup_sync(SCOPE.key, key_for_messages(b), qvec, cvec, policy)
                    hits += result.hit
                    true_hits += result.hit and result.answer == str(i) and label == 1
                results.append((true_hits / max(1, hits), true_hits / positives, short, long, margin, guards))
    print("precision recall | short long margin guards")
    for row in sorted(results, reverse=True)[:15]:
        print("{:.3f} {:.3f} | {:.2f} {:.2f} {:.2f} {}".format(*row))
    ok = [r for r in results if r[1] >= min_recall]
    if ok:
        best = max(ok)
        print(f"best at recall >= {min_recall:.2f}: " + "{:.3f} {:.3f} | {:.2f} {:.2f} {:.2f} {}".format(*best))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEV)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--min-recall", type=float, default=0.42)
    args = ap.parse_args()
    if "test" in args.data.name:
        sys.exit("tune on the dev half only; the test half is for reporting")
    if not args.data.is_file():
        sys.exit(f"no {args.data}: pass --data PATH to QQP's dev half")
    asyncio.run(tune(load_pairs(args.data, args.pairs), args.min_recall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
