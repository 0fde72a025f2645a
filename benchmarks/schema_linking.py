"""Schema linking on a generated 300-table schema: recall of the gold tables with at most ``--top-k``
tables in the prompt, and the time per question (the schema's vectors are embedded once).

    .venv/bin/python benchmarks/schema_linking.py [--top-k 8] [--json out.json]

The schema and its questions come from ``datapilot.text2sql._wide`` (30 business areas of 10 tables;
one question per area about one table, one that joins a table to its parent). The embedder is the
embedded all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from datapilot.cache import SentenceTransformerEmbedder
from datapilot.text2sql import SchemaLinker
from datapilot.text2sql._wide import linking_cases, wide_schema


async def measure(top_k: int) -> dict[str, object]:
    tables, cases = wide_schema(), linking_cases()
    embedder = SentenceTransformerEmbedder()
    try:
        linker = SchemaLinker(embedder, top_k=top_k)
        started = time.perf_counter()
        await linker.select("warm-up", tables)  # embeds the schema once
        first = time.perf_counter() - started
        found = needed = full = 0
        times, missed = [], []
        for case in cases:
            t0 = time.perf_counter()
            chosen = {t.name for t in await linker.select(case.question, tables)}
            times.append(time.perf_counter() - t0)
            assert len(chosen) <= top_k
            hit = len(set(case.gold) & chosen)
            found, needed, full = found + hit, needed + len(case.gold), full + (hit == len(case.gold))
            if hit < len(case.gold):
                missing = sorted(set(case.gold) - chosen)
                missed.append({"question": case.question, "gold": case.gold, "missing": missing})
        return {
            "tables": len(tables),
            "questions": len(cases),
            "top_k": top_k,
            "recall": round(found / needed, 4),
            "all_gold_share": round(full / len(cases), 4),
            "schema_embed_s": round(first, 2),
            "median_ms": round(statistics.median(times) * 1000, 2),
            "missed": missed,
        }
    finally:
        await embedder.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(measure(args.top_k))
    shown = {k: v for k, v in result.items() if k != "missed"}
    print(json.dumps(shown, indent=2))
    for m in result["missed"][:10]:  # type: ignore[index]
        print("missed:", m)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
