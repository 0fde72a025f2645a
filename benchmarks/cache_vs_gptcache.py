"""DataPilot's semantic cache against GPTCache on the same paraphrase workload, side by side.

    python benchmarks/cache_vs_gptcache.py --gptcache-python /tmp/gptcache-venv/bin/python [--pairs 5000]

GPTCache (pip ``gptcache``, sqlite + faiss, the same bundled all-MiniLM-L6-v2 through its ``SBERT``
embedding) runs in its own virtual environment, in a subprocess, one thread, as its README shows it;
DataPilot runs in this process through the same code as ``datapilot bench cache``. Both store the
first ``--pairs`` pairs' first texts and probe with the second (protocol: shared/data/cache/README.md).

GPTCache's threshold ``s`` on its default ``SearchDistanceEvaluation`` (rank = 4 - squared L2 distance)
hits when cosine >= 2s - 1; its sweep below is given in that cosine so the two curves line up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from datapilot.cache._bench import DEFAULT_SWEEP, default_data_file, run_bench, write_outputs
from datapilot.cache._embed import bundled_minilm_path
from datapilot.core.config import CacheSettings

GPTCACHE_SIDE = textwrap.dedent(
    r"""
    import gzip, json, os, sys, tempfile, time
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    from gptcache import Config, cache
    from gptcache.adapter.api import get, init_similar_cache, put
    from gptcache.embedding import SBERT
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    data, n, model, sweep = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    rows = []
    with (gzip.open(data, "rt") if data.endswith(".gz") else open(data)) as f:
        for line in f:
            if len(rows) >= n:
                break
            r = json.loads(line)
            rows.append((r.get("a", r.get("origin")), r.get("b", r.get("similar")), int(r.get("label", 1))))
    tmp = tempfile.mkdtemp(prefix="gptcache-bench-")
    embedding = SBERT(model)
    dm = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/sqlite.db"),
                          VectorBase("faiss", dimension=embedding.dimension, index_path=f"{tmp}/faiss.index"))
    init_similar_cache(data_dir=tmp, embedding=embedding, data_manager=dm, evaluation=SearchDistanceEvaluation(),
                       config=Config(similarity_threshold=0.8))
    embedding.to_embeddings("warm up")
    t = time.perf_counter()
    for i, (a, _, _) in enumerate(rows):
        put(a, str(i))
    insert_s = time.perf_counter() - t
    get_ms, embed_ms, outcomes = [], [], []
    t_all = time.perf_counter()
    for i, (_, b, label) in enumerate(rows):
        t = time.perf_counter()
        answer = get(b)
        get_ms.append((time.perf_counter() - t) * 1000)
        outcomes.append((answer is not None, answer == str(i) and label == 1))
    seq_s = time.perf_counter() - t_all
    # the sweep: top-1 distance and answer per probe (embedding timed on its own here)
    top = []
    for i, (_, b, label) in enumerate(rows):
        t = time.perf_counter()
        e = embedding.to_embeddings(b)
        embed_ms.append((time.perf_counter() - t) * 1000)
        res = dm.search(e, top_k=1)
        if not res:
            top.append((None, None))
            continue
        dist, _id = res[0]
        data_obj = dm.get_scalar_data(res[0])
        ans = data_obj.answers[0].answer if data_obj is not None else None
        top.append((float(dist), ans))
    pos = sum(1 for r in rows if r[2] == 1)

    def score(label, outs):
        hits = sum(1 for h, _ in outs if h)
        true = sum(1 for h, ok in outs if h and ok)
        return {"threshold": label, "hits": hits, "true_hits": true, "precision": true / hits if hits else 1.0,
                "recall": true / pos, "false_hit_rate": (hits - true) / len(outs)}

    sweep_rows = []
    for cos in sweep:
        outs = []
        for i, (dist, ans) in enumerate(top):
            hit = dist is not None and (2 - dist) / 2 >= cos  # squared L2 on unit vectors = 2 - 2 cos
            outs.append((hit, hit and ans == str(i) and rows[i][2] == 1))
        sweep_rows.append(score(cos, outs))
    pct = lambda v: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                     "p99": float(np.percentile(v, 99))}
    print(json.dumps({"insert_s": insert_s, "insert_per_s": len(rows) / insert_s, "get_ms": pct(get_ms),
                      "embed_ms": pct(embed_ms), "queries_per_s": len(rows) / seq_s,
                      "default": score("default (0.8)", outcomes), "sweep": sweep_rows}))
    """
)


def run_gptcache(python: str, data: Path, pairs: int, sweep: tuple[float, ...]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(GPTCACHE_SIDE)
    proc = subprocess.run(
        [python, f.name, str(data), str(pairs), str(bundled_minilm_path()), json.dumps(list(sweep))],
        capture_output=True,
        text=True,
        check=False,
    )
    Path(f.name).unlink()
    if proc.returncode != 0:
        raise SystemExit(f"GPTCache side failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def best_at_recall(rows: list[dict[str, Any]], recall: float) -> dict[str, Any] | None:
    eligible = [r for r in rows if r["recall"] >= recall]
    return max(eligible, key=lambda r: r["precision"]) if eligible else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gptcache-python", required=True, help="python of a venv with gptcache 0.1.44 installed")
    ap.add_argument("--data", type=Path, default=None, help="JSONL(.gz) pairs [default: the shared QQP test half]")
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    data = args.data or default_data_file(Path(__file__).parent)
    if data is None:
        raise SystemExit("no data: pass --data")

    print(f"DataPilot on {data.name}, {args.pairs} pairs ...", file=sys.stderr)
    ours = asyncio.run(run_bench(data, pairs=args.pairs, settings=CacheSettings(), concurrency=args.concurrency))
    write_outputs(ours, args.out, "cache_vs_gptcache_datapilot")
    print("GPTCache ...", file=sys.stderr)
    theirs = run_gptcache(args.gptcache_python, data, args.pairs, DEFAULT_SWEEP)
    (args.out / "cache_vs_gptcache_gptcache.json").write_text(json.dumps(theirs, indent=2))

    o = ours.to_dict()
    print(f"\n{data.name}, first {ours.pairs} pairs ({ours.positives} duplicates)\n")
    print(f"{'cosine':>8} | {'DataPilot P':>11} {'R':>6} | {'GPTCache P':>10} {'R':>6}")
    for mine, gpt in zip(o["sweep"], theirs["sweep"], strict=True):
        print(
            f"{mine['threshold']:>8} | {mine['precision']:>11.3f} {mine['recall']:>6.3f} | "
            f"{gpt['precision']:>10.3f} {gpt['recall']:>6.3f}"
        )

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    ours_best = best_at_recall(o["sweep"] + [o["default"]], 0.40)
    gpt_best = best_at_recall(theirs["sweep"], 0.40)
    lines = [
        ("precision at defaults", o["default"]["precision"], theirs["default"]["precision"]),
        ("recall at defaults", o["default"]["recall"], theirs["default"]["recall"]),
        ("false-hit rate at defaults", o["default"]["false_hit_rate"], theirs["default"]["false_hit_rate"]),
        ("best precision at recall >= 0.40", ours_best and ours_best["precision"], gpt_best and gpt_best["precision"]),
        (
            "query p50 ms, end to end (sequential)",
            (o["embed_ms"]["p50"] or 0) + (o["lookup_ms"]["p50"] or 0),
            theirs["get_ms"]["p50"],
        ),
        ("embedding p50 ms", o["embed_ms"]["p50"], theirs["embed_ms"]["p50"]),
        (
            "lookup p50 ms, excluding embedding",
            o["lookup_ms"]["p50"],
            theirs["get_ms"]["p50"] - theirs["embed_ms"]["p50"],
        ),
        ("queries/s, one client", o["sequential_queries_per_s"], theirs["queries_per_s"]),
        (f"queries/s, {args.concurrency} clients (GPTCache: one thread)", o["queries_per_s"], theirs["queries_per_s"]),
        ("inserts/s (bulk for DataPilot)", o["insert_per_s"], theirs["insert_per_s"]),
    ]
    print(f"\n{'metric':<52} {'DataPilot':>10} {'GPTCache':>10} {'ratio':>7}")
    for name, a, b in lines:
        fa = f"{a:.3f}" if isinstance(a, float) else str(a)
        fb = f"{b:.3f}" if isinstance(b, float) else str(b)
        print(f"{name:<52} {fa:>10} {fb:>10} {ratio(a, b):>7}")


if __name__ == "__main__":
    main()
