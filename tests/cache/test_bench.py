"""``datapilot bench cache``: the sweep's files, and how each false hit is classified."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from datapilot.cache._bench import FALSE_KINDS, Truth, load_pairs
from datapilot.cli import app

ROWS = [
    ("What is the capital of France?", "what is the capital of France", 1),
    ("How do I bake bread at home?", "How do I bake bread at home quickly?", 0),
    ("Best laptop for programming in 2016?", "Which is the tallest mountain on earth?", 0),
    ("Which is the tallest mountain on Earth", "Best laptop for programming in 2016?", 0),
    ("How do I lose weight fast?", "Quickest way to drop pounds?", 1),
    ("What is the quickest way to drop pounds?", "How can I learn to swim as an adult?", 0),
    ("How do I learn to swim as an adult?", "Where can I buy cheap flights?", 0),
]
# Pairs elsewhere in the file (not benchmarked) that join texts into duplicate groups.
MORE = [("Quickest way to drop pounds?", "What is the quickest way to drop pounds?", 1)]


def _write(path: Path, rows: list[tuple[str, str, int]]) -> None:
    with gzip.open(path, "wt") as f:
        for a, b, label in rows:
            f.write(json.dumps({"a": a, "b": b, "label": label}) + "\n")


def test_each_false_hit_is_classified_by_what_the_labels_say() -> None:
    truth = Truth(ROWS, ROWS + MORE)
    assert truth.outcome(0, True, "0") == "true"
    assert truth.outcome(0, False, None) == "miss"
    assert truth.outcome(1, True, "1") == "near_miss"  # own row, labelled different
    assert truth.outcome(2, True, "3") == "same_text"  # the probe is row 3's question, case aside
    assert truth.outcome(4, True, "5") == "known_duplicate"  # joined by a pair outside the benchmarked rows
    assert truth.outcome(5, True, "6") == "other_row"  # close, but no label says so
    assert truth.outcome(6, True, "synthetic answer 3") == "other_row"
    # Probes 2 and 3 are each stored word for word under the other's row.
    assert truth.verbatim_elsewhere == 2


def test_bench_cache_writes_the_sweep_with_false_hits_by_kind(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl.gz"
    _write(data, ROWS + MORE)
    config = tmp_path / "datapilot.toml"
    config.write_text('[cache]\n[cache.embedders.default]\nkind = "hash"\n[cache.defaults]\nthreshold_short = 0.6\n')
    out_dir = tmp_path / "out"
    args = ["bench", "cache", "--data", str(data), "--pairs", str(len(ROWS)), "--out", str(out_dir)]
    done = CliRunner().invoke(app, [*args, "--thresholds", "0.5,0.99", "--concurrency", "3", "--config", str(config)])
    assert done.exit_code == 0, done.output
    printed = " ".join(done.stdout.split())
    assert "Lenient precision counts same-text and known-duplicate hits as right" in printed
    assert "2 probes are stored word for word under another row" in printed
    report = json.loads((out_dir / "cache_bench.json").read_text())
    assert report["pairs"] == len(ROWS) and report["positives"] == 2 and report["verbatim_elsewhere"] == 2
    rows = list(csv.DictReader((out_dir / "cache_bench.csv").read_text().splitlines()))
    assert [r["curve"] for r in rows] == ["default", "datapilot", "datapilot", "cosine_only", "cosine_only"]
    for r in rows:
        false_hits = sum(int(r[k]) for k in FALSE_KINDS)
        assert int(r["hits"]) == int(r["true_hits"]) + false_hits
        lenient = (int(r["true_hits"]) + int(r["same_text"]) + int(r["known_duplicate"])) / max(int(r["hits"]), 1)
        assert abs(float(r["lenient_precision"]) - (lenient if int(r["hits"]) else 1.0)) < 1e-3
    loose = next(r for r in rows if r["curve"] == "cosine_only" and r["threshold"] == "0.5")
    # Exact repeats are served at any threshold: both same-text probes hit the other row.
    assert int(loose["same_text"]) == 2 and int(loose["true_hits"]) >= 1
    strict = next(r for r in rows if r["curve"] == "cosine_only" and r["threshold"] == "0.99")
    assert int(strict["same_text"]) == 2 and int(strict["near_miss"]) == int(strict["other_row"]) == 0
    assert (out_dir / "cache_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(load_pairs(data, 100)) == len(ROWS + MORE)


async def test_the_sweep_applies_the_scopes_reranker_and_sweeps_its_threshold(tmp_path: Path) -> None:
    """A reranker that gives every candidate sharing the probe's first word 0.6, the rest 0.2."""
    from datapilot.cache import HashEmbedder, SemanticCache
    from datapilot.cache._bench import RERANK_SWEEP, run_bench

    from .conftest import hash_settings

    class FirstWord:
        threshold = 0.5
        calls = 0

        async def score(self, query: str, candidates: list[str]) -> list[float]:
            FirstWord.calls += 1
            return [0.6 if c.split()[0].lower() == query.split()[0].lower() else 0.2 for c in candidates]

    data = tmp_path / "pairs.jsonl.gz"
    _write(data, ROWS + MORE)
    settings = hash_settings(threshold_short=0.3, threshold_long=0.3, reranker="first")
    embedders, rerankers = {"default": HashEmbedder()}, {"first": FirstWord()}
    cache = SemanticCache(settings, tmp_path / "home", embedders=embedders, rerankers=rerankers)
    report = await run_bench(data, pairs=len(ROWS), cache=cache, thresholds=(0.3, 0.5), concurrency=2)
    by = {row.threshold: row for row in report.sweep}
    assert [t for t in by if isinstance(t, str)] == [f"rerank {r:g}" for r in RERANK_SWEEP]
    # query() and the sweep agree; the cosine rows use the reranker at its own threshold (0.5).
    assert report.default.hits == by[0.3].hits == by["rerank 0.5"].hits
    # At 0.1 the reranker refuses nothing, at 0.5 the other first words, past 0.6 all but the repeats.
    assert by["rerank 0.7"].hits < by["rerank 0.5"].hits < by["rerank 0.1"].hits
    # The repeats: probe 0 is its own question again, probes 2 and 3 each the other's (same text).
    assert by["rerank 0.98"].hits == by["rerank 0.7"].hits == 3 and by["rerank 0.7"].false_hits["same_text"] == 2
    # The cosine-only baseline has no reranker either: it hits at least as often as the 0.1 row.
    assert next(r for r in report.baseline if r.threshold == 0.3).hits >= by["rerank 0.1"].hits
    assert FirstWord.calls <= len(ROWS) * 2  # one score per probe and candidate, kept across the sweep
