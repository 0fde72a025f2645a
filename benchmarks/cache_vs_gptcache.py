"""DataPilot's semantic cache against GPTCache on the same paraphrase workload, side by side.

    python benchmarks/cache_vs_gptcache.py --gptcache-python /tmp/gptcache-venv/bin/python \
        [--pairs 5000] [--threads 2]

``--gptcache-python``: a virtual environment with ``gptcache==0.1.44``, ``sentence-transformers``,
``faiss-cpu`` and ``sqlalchemy`` (the model folder is passed to it from this one).

Workload: the first ``--pairs`` usable pairs of the data file (default: the shared QQP test half), read
once by DataPilot's ``load_pairs`` and handed to both caches, so both see the same rows. Each cache stores
every pair's first text with its row number as the answer, then is probed with every pair's second text
(shared/data/cache/README.md).

Capacity: nothing is evicted on either side. GPTCache's data manager is built with
``get_data_manager(..., max_size=<pairs>)`` (its default ``max_size`` of 1,000 would make its LRU evict
all but the last 1,000 stored questions); the script checks that sqlite holds every row, none marked
evicted, and faiss every vector, and stops otherwise. DataPilot keeps its default ``max_entries``
(100,000); the number of entries it holds is printed.

Threads: ``--threads N`` (default 2) for both. Both processes are pinned to the same N cores (when the
machine has more), and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` are N for both.
GPTCache (sentence-transformers on torch, faiss): ``torch.set_num_threads(N)``,
``faiss.omp_set_num_threads(N)``. DataPilot (ONNX Runtime, faiss): its query session runs with
``intra_op_num_threads = N``, its bulk-insert pool with N single-threaded runs, torch with N threads;
its faiss searches stay single-threaded per query, its own choice. The figures each side applied are
printed.

GPTCache (pip ``gptcache`` 0.1.44, sqlite + faiss, the same bundled all-MiniLM-L6-v2 through its ``SBERT``
embedding, ``SearchDistanceEvaluation``) runs in its own virtual environment, in a subprocess, with one
sequential client as its README shows it; DataPilot runs in this process through the same code as
``datapilot bench cache`` (one sequential client, then ``--concurrency`` concurrent ones).

Scoring, the same functions for both (``datapilot.cache._bench``: ``Truth.outcome`` and the sweep row
it feeds, with ``lenient_precision``):

* strict: a hit is right only when it returns the probe's own row on a pair labelled 1. Precision =
  right hits / hits, recall = right hits / pairs labelled 1, false-hit rate = other hits / probes.
* lenient: a hit is also right when the stored question it returns is the probe's own text (case,
  spacing and punctuation aside) or a duplicate of it by the data set's labels (a chain of pairs
  labelled 1 anywhere in the file). Only precision is given this way; recall stays the strict one.

GPTCache's threshold ``s`` on its default ``SearchDistanceEvaluation`` (rank = 4 - squared L2 distance)
hits when cosine >= 2s - 1 (its default 0.8: cosine >= 0.60); its sweep below is in that cosine, from the
top-1 faiss neighbour of the embedding its own ``get`` made for each probe, so the two curves line up.
DataPilot's sweep sets both its thresholds to the cosine and keeps its guards and margin.

Timing: queries/s and latencies for both come from the same run, one sequential client each (DataPilot
also with ``--concurrency`` clients, which GPTCache's synchronous ``get`` has no counterpart for). They
only mean something on an otherwise idle machine: the load average is printed before and after, with a
warning when something else was running (on 2 busy cores, torch with 2 OpenMP threads was seen to embed
20 times slower than with 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datapilot.cache._bench import (
    DEFAULT_SWEEP,
    SweepRow,
    Truth,
    _score,
    default_data_file,
    load_pairs,
    run_bench,
    write_outputs,
)
from datapilot.cache._embed import bundled_minilm_path
from datapilot.core.config import CacheSettings
from datapilot.retrieval import _embedders as _embed

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

GPTCACHE_SIDE = textwrap.dedent(
    r"""
    import json, os, sys, tempfile, time
    threads = int(sys.argv[3])
    import numpy as np
    import faiss
    import torch
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    from gptcache import Config, cache
    from gptcache.adapter.api import get, init_similar_cache, put
    from gptcache.embedding import SBERT
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    with open(sys.argv[1]) as f:
        rows = json.load(f)  # [[stored question, probe], ...], as DataPilot's load_pairs read them
    n, model = len(rows), sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="gptcache-bench-")
    embedding = SBERT(model)
    # max_size = every stored question: the default of 1,000 evicts (LRU) all but the last 1,000
    dm = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/sqlite.db"),
                          VectorBase("faiss", dimension=embedding.dimension, index_path=f"{tmp}/faiss.index"),
                          max_size=n)
    init_similar_cache(data_dir=tmp, embedding=embedding, data_manager=dm, evaluation=SearchDistanceEvaluation(),
                       config=Config(similarity_threshold=0.8))
    embedding.to_embeddings("warm up")
    t = time.perf_counter()
    for i, (a, _) in enumerate(rows):
        put(a, str(i))
    insert_s = time.perf_counter() - t

    def stored():
        return {"rows": dm.s.count(state=0), "evicted": dm.s.count(state=-1), "vectors": dm.v.count()}

    after_insert = stored()
    if after_insert != {"rows": n, "evicted": 0, "vectors": n}:
        sys.exit(f"GPTCache did not keep all {n} entries: {after_insert}")
    # each probe's embedding, taken (and timed) inside get() itself, is kept for the sweep
    get_ms, embed_ms, default_answers, probe_vectors = [], [], [], []

    def embed_probe(data, **kwargs):
        t = time.perf_counter()
        e = embedding.to_embeddings(data, **kwargs)
        embed_ms.append((time.perf_counter() - t) * 1000)
        probe_vectors.append(e)
        return e

    cache.embedding_func = embed_probe
    t_all = time.perf_counter()
    for _, b in rows:
        t = time.perf_counter()
        answer = get(b)
        get_ms.append((time.perf_counter() - t) * 1000)
        default_answers.append(answer)
    seq_s = time.perf_counter() - t_all
    assert len(probe_vectors) == n, f"{len(probe_vectors)} embeddings for {n} probes"
    # the sweep: top-1 neighbour per probe, as cosine (squared L2 on unit vectors = 2 - 2 cos), and its answer
    top = []
    for e in probe_vectors:
        res = dm.search(e, top_k=1)
        if not res or res[0][1] < 0:
            top.append((None, None))
            continue
        data_obj = dm.get_scalar_data(res[0])
        top.append(((2 - float(res[0][0])) / 2, data_obj.answers[0].answer if data_obj is not None else None))
    pct = lambda v: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                     "p99": float(np.percentile(v, 99))}
    print(json.dumps({
        "max_size": n, "stored_after_insert": after_insert, "stored_at_end": stored(),
        "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads(),
                    "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    **{v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}},
        "insert_s": insert_s, "insert_per_s": n / insert_s, "get_ms": pct(get_ms), "embed_ms": pct(embed_ms),
        "queries_per_s": n / seq_s, "default_answers": default_answers, "top": top}))
    """
)


def pin_threads(threads: int) -> dict[str, Any]:
    """Give this process (and so the GPTCache subprocess) ``threads`` cores and intra-op threads.

    Returns a record that DataPilot's ONNX Runtime sessions fill in when the embedder builds them."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    applied: dict[str, Any] = {}
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])
        applied["cores"] = sorted(os.sched_getaffinity(0))
    try:
        import torch

        torch.set_num_threads(threads)
        applied["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)  # DataPilot's searches still set 1 on each thread that searches
        applied["faiss (outside searches)"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    try:
        import onnxruntime as ort
    except ImportError:
        return applied

    make_session, make_bulk = _embed.onnx_session, _embed.onnx_bulk_runner

    def onnx_session(model: Any, path: Path, target: Path, required: bool = False) -> Any:
        session = make_session(model, path, target, required)
        if session is None:
            return None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        applied["onnx query session intra-op"] = session.get_session_options().intra_op_num_threads
        return session

    def onnx_bulk_runner(file: Path) -> tuple[Any, ThreadPoolExecutor]:
        session, pool = make_bulk(file)
        pool.shutdown(wait=False)
        applied["onnx bulk runs x intra-op"] = f"{threads} x {session.get_session_options().intra_op_num_threads}"
        return session, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cache-embed-bulk")

    _embed.onnx_session = onnx_session
    _embed.onnx_bulk_runner = onnx_bulk_runner
    return applied


def run_gptcache(python: str, rows: list[tuple[str, str, int]], threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gptcache-side-") as tmp:
        script, pairs = Path(tmp) / "side.py", Path(tmp) / "pairs.json"
        script.write_text(GPTCACHE_SIDE)
        pairs.write_text(json.dumps([[a, b] for a, b, _ in rows]))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.update({var: str(threads) for var in THREAD_VARS})
        proc = subprocess.run(
            [python, str(script), str(pairs), str(bundled_minilm_path()), str(threads)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
    if proc.returncode != 0:
        raise SystemExit(f"GPTCache side failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def score_gptcache(
    theirs: dict[str, Any], truth: Truth, positives: int, sweep: tuple[float, ...]
) -> tuple[SweepRow, list[SweepRow]]:
    """GPTCache's hits scored by the same ``Truth.outcome`` and sweep rows as DataPilot's."""
    answers: list[str | None] = theirs["default_answers"]
    default = _score("default", [truth.outcome(i, a is not None, a) for i, a in enumerate(answers)], positives)
    rows = []
    for cos in sweep:
        outcomes = [truth.outcome(i, c is not None and c >= cos, a) for i, (c, a) in enumerate(theirs["top"])]
        rows.append(_score(cos, outcomes, positives))
    return default, rows


def best_at_recall(rows: list[SweepRow], recall: float, lenient: bool = False) -> SweepRow | None:
    eligible = [r for r in rows if r.recall >= recall]
    key = (lambda r: r.lenient_precision) if lenient else (lambda r: r.precision)
    return max(eligible, key=key) if eligible else None


def describe(row: SweepRow | None, lenient: bool = False) -> str:
    if row is None:
        return "none reaches it"
    p = row.lenient_precision if lenient else row.precision
    other = f"strict {row.precision:.3f}" if lenient else f"lenient {row.lenient_precision:.3f}"
    return f"{p:.3f} ({other}) at recall {row.recall:.3f}, threshold {row.threshold}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gptcache-python", required=True, help="python of a venv with gptcache 0.1.44 installed")
    ap.add_argument("--data", type=Path, default=None, help="JSONL(.gz) pairs [default: the shared QQP test half]")
    ap.add_argument("--pairs", type=int, default=5000, help="pairs stored and probed [5000]")
    ap.add_argument("--threads", type=int, default=2, help="cores and intra-op threads for each cache [2]")
    ap.add_argument("--concurrency", type=int, default=32, help="DataPilot's concurrent clients [32]")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    data = args.data or default_data_file(Path(__file__).parent)
    if data is None:
        raise SystemExit("no data: pass --data")
    load = [os.getloadavg()[0]]
    applied = pin_threads(args.threads)
    rows = load_pairs(data, args.pairs)  # the rows run_bench reads too
    truth = Truth(rows, load_pairs(data, 10**9))
    positives = sum(1 for _, _, label in rows if label == 1)

    settings = CacheSettings()
    print(f"DataPilot on {data.name}, {len(rows)} pairs, {args.threads} threads ...", file=sys.stderr)
    ours = asyncio.run(run_bench(data, pairs=args.pairs, settings=settings, concurrency=args.concurrency))
    if ours.pairs != len(rows):
        raise SystemExit(f"DataPilot read {ours.pairs} pairs, this script {len(rows)}")
    write_outputs(ours, args.out, "cache_vs_gptcache_datapilot")
    load.append(os.getloadavg()[0])
    print("GPTCache ...", file=sys.stderr)
    theirs = run_gptcache(args.gptcache_python, rows, args.threads)
    load.append(os.getloadavg()[0])
    gpt_default, gpt_sweep = score_gptcache(theirs, truth, positives, DEFAULT_SWEEP)
    summary = {k: v for k, v in theirs.items() if k not in ("default_answers", "top")}
    summary |= {"default": gpt_default.to_dict(), "sweep": [r.to_dict() for r in gpt_sweep]}
    (args.out / "cache_vs_gptcache_gptcache.json").write_text(json.dumps(summary, indent=2))

    ours_sweep = [r for r in ours.sweep if not isinstance(r.threshold, str)]
    print(f"\n{data.name}, first {len(rows)} pairs ({positives} duplicates), {args.threads} threads each")
    print(f"  DataPilot: {applied}")
    print(f"  GPTCache:  {theirs['threads']}")
    print(
        f"  stored: DataPilot {ours.entries} entries (max_entries {settings.defaults.max_entries}); "
        f"GPTCache {theirs['stored_at_end']['rows']} rows, {theirs['stored_at_end']['vectors']} vectors, "
        f"{theirs['stored_at_end']['evicted']} evicted (max_size {theirs['max_size']})"
    )
    print("  strict: right = the probe's own row on a pair labelled 1; lenient: also the probe's own text or a")
    print("  labelled duplicate stored under another row. Recall and false-hit rate are strict.\n")
    head = f"{'P strict':>8} {'P lenient':>9} {'recall':>6} {'false':>6}"
    print(f"{'':>9} | {'DataPilot':^32} | {'GPTCache':^32}")
    print(f"{'cosine':>9} | {head} | {head}")

    def cells(r: SweepRow) -> str:
        return f"{r.precision:>8.3f} {r.lenient_precision:>9.3f} {r.recall:>6.3f} {r.false_hit_rate:>6.3f}"

    print(f"{'defaults':>9} | {cells(ours.default)} | {cells(gpt_default)}")
    for mine, gpt in zip(ours_sweep, gpt_sweep, strict=True):
        print(f"{mine.threshold:>9} | {cells(mine)} | {cells(gpt)}")
    policy = settings.defaults
    print(
        f"  (defaults: DataPilot's policy, cosine >= {policy.threshold_short} short / {policy.threshold_long} long"
        " with its guards; GPTCache s = 0.8,"
    )
    print("  cosine >= 0.60. Swept rows: DataPilot keeps its guards and margin; GPTCache is its top-1 cosine.)\n")

    candidates = {
        "DataPilot": [ours.default, *ours_sweep],
        "GPTCache": [gpt_default, *gpt_sweep],
        "DataPilot, cosine only (no guards)": ours.baseline,
    }
    for lenient in (False, True):
        name = "lenient" if lenient else "strict"
        print(f"best {name} precision at recall >= 0.40:")
        for who, cands in candidates.items():
            if cands:
                print(f"  {who:<36} {describe(best_at_recall(cands, 0.40, lenient), lenient)}")
    o = ours.to_dict()

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    lines: list[tuple[str, float | None, float | None]] = [
        ("queries/s, one sequential client", o["sequential_queries_per_s"], theirs["queries_per_s"]),
        (f"queries/s, {args.concurrency} concurrent clients (DataPilot only)", o["queries_per_s"], None),
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
        ("inserts/s (DataPilot bulk, GPTCache one put each)", o["insert_per_s"], theirs["insert_per_s"]),
    ]
    cores = os.cpu_count() or 1
    print(f"\nload average (1 min) at start, after DataPilot, after GPTCache: {load} on {cores} cores")
    if load[0] >= 0.5:
        print("WARNING: something else was using the CPU at start: the timings below are not comparable")
    print(f"{'metric':<56} {'DataPilot':>10} {'GPTCache':>10} {'ratio':>7}")
    for label, a, b in lines:
        fa = f"{a:.3f}" if isinstance(a, float) else "-" if a is None else str(a)
        fb = f"{b:.3f}" if isinstance(b, float) else "-" if b is None else str(b)
        print(f"{label:<56} {fa:>10} {fb:>10} {ratio(a, b):>7}")


if __name__ == "__main__":
    main()
