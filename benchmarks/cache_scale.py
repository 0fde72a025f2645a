"""The semantic cache at scale: lookup latency (embedding excluded) with many entries in one scope,
and bulk insert speed with the real MiniLM embedder.

    .venv/bin/python benchmarks/cache_scale.py [--entries 100000] [--probes 2000] [--bulk 10000] [--chinese]

Lookup uses random unit vectors (stored directly, so the run measures the index and the row store,
not the embedder) and probes that are near-duplicates of stored entries; bulk insert embeds the
first questions of ``qqp_test`` with the bundled MiniLM. ``--chinese`` stores synthetic Chinese questions
(8 to 14 characters drawn from 3,000 with Zipf frequencies) and probes with each stored question one
character shorter, so every lookup also runs the lexical channel (``cache/_lexical``): its first lookup
builds the scope's lexical index from the rows, and is timed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from datapilot.cache import SemanticCache
from datapilot.core.config import CacheSettings

QQP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cache" / "qqp_test.jsonl.gz"


class FixedEmbedder:
    """Returns the vector the benchmark set for the next probe."""

    name = "fixed"

    def __init__(self) -> None:
        self.next = np.zeros((1, 384), dtype=np.float32)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return self.next


def chinese_texts(n: int, rng: np.random.Generator) -> list[str]:
    pool = [chr(0x4E00 + i) for i in range(3000)]
    weights = 1.0 / np.arange(1, len(pool) + 1)
    weights /= weights.sum()
    lengths = rng.integers(8, 15, n)
    chars = rng.choice(len(pool), int(lengths.sum()), p=weights)
    out, at = [], 0
    for k in lengths:
        out.append("".join(pool[c] for c in chars[at : at + k]))
        at += k
    return out


async def lookup(entries: int, probes: int, chinese: bool = False) -> None:
    emb = FixedEmbedder()
    rng = np.random.default_rng(0)
    texts = chinese_texts(entries, rng) if chinese else [f"stored question {i}" for i in range(entries)]
    vectors = rng.standard_normal((entries, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    async with SemanticCache(CacheSettings(), Path(tempfile.mkdtemp()), embedders={"default": emb}) as cache:
        started = time.perf_counter()
        for s in range(0, entries, 10_000):
            batch = range(s, min(s + 10_000, entries))
            await cache.insert_many(
                "scale",
                [(texts[i], f"answer {i}") for i in batch],
                vectors=[(vectors[i], None) for i in batch],
            )
        print(f"stored {entries:,} entries (vectors given) in {time.perf_counter() - started:.1f} s")
        times, hits = [], 0
        if chinese:
            emb.next = vectors[:1]
            first = await cache.query("scale", texts[0][1:])
            print(f"first Chinese lookup (builds the lexical index of {entries:,} rows): {first.lookup_ms:.0f} ms")
        for _ in range(probes):
            j = int(rng.integers(entries))
            q = vectors[j] + 0.02 * rng.standard_normal(384).astype(np.float32)
            emb.next = (q / np.linalg.norm(q))[None, :]
            result = await cache.query("scale", texts[j][1:] if chinese else texts[j])
            times.append(result.lookup_ms)
            hits += result.hit
        p50, p95, p99 = np.percentile(times, [50, 95, 99])
        print(
            f"lookup excluding embedding, {probes} near-duplicate probes: p50 {p50:.3f} ms, p95 {p95:.3f} ms, "
            f"p99 {p99:.3f} ms; hit rate {hits / probes:.3f}"
        )


async def bulk(n: int) -> None:
    rows = [json.loads(line) for line in gzip.open(QQP, "rt")][:n]
    async with SemanticCache(CacheSettings(), Path(tempfile.mkdtemp())) as cache:
        await cache.embedder("default").embed(["warm up"])
        started = time.perf_counter()
        for s in range(0, n, 1000):
            await cache.insert_many("bulk", [(r["a"], str(s + i)) for i, r in enumerate(rows[s : s + 1000])])
        took = time.perf_counter() - started
        entries = (await cache.stats("bulk")).entries
        print(
            f"bulk insert of {n:,} questions with MiniLM embedding: {took:.1f} s ({n / took:.0f}/s), {entries} stored"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--bulk", type=int, default=10_000, help="0 skips the bulk insert")
    ap.add_argument("--chinese", action="store_true", help="synthetic Chinese questions: the lexical channel runs")
    args = ap.parse_args()
    asyncio.run(lookup(args.entries, args.probes, args.chinese))
    if args.bulk:
        if not QQP.is_file():
            print(f"no {QQP}: skipping the bulk insert", file=sys.stderr)
        else:
            asyncio.run(bulk(args.bulk))
    return 0


if __name__ == "__main__":
    sys.exit(main())
