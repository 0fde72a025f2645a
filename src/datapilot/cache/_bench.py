"""The cache benchmark behind ``datapilot bench cache``: hit precision, recall, false hits and latency
on a paraphrase data set, for a sweep of thresholds.

Protocol (as in shared/data/cache/README.md): store each pair's first text with its row number as the
answer, probe with the second. A hit on a pair labelled 1 that returns its own row is a true hit; any
other hit is a false hit. Precision = true hits / hits, recall = true hits / pairs labelled 1,
false-hit rate = false hits / probes. Embedding and lookup latency are measured separately.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.cache._cache import SemanticCache, percentile
from datapilot.cache._key import key_for_messages
from datapilot.cache._types import Scope
from datapilot.core.config import CacheSettings

SCOPE = Scope("bench")
DEFAULT_SWEEP = (0.75, 0.80, 0.83, 0.85, 0.87, 0.90, 0.93, 0.95, 0.97)


def default_data_file(start: Path | None = None) -> Path | None:
    """The QQP test half in a ``shared/data/cache`` beside the repository or a parent folder."""
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents, Path(__file__).resolve().parents[3]]:
        for candidate in (folder / "shared" / "data" / "cache", folder.parent / "shared" / "data" / "cache"):
            path = candidate / "qqp_test.jsonl.gz"
            if path.is_file():
                return path
    return None


def load_pairs(path: Path, limit: int) -> list[tuple[str, str, int]]:
    """Pairs from JSONL (optionally gzipped): ``a``/``b``/``label`` or ``origin``/``similar`` (label 1)."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    pairs: list[tuple[str, str, int]] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if len(pairs) >= limit:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            a = row.get("a", row.get("origin", row.get("text1")))
            b = row.get("b", row.get("similar", row.get("text2")))
            if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
                continue
            pairs.append((a, b, int(row.get("label", 1))))
    return pairs


@dataclass
class SweepRow:
    threshold: float | str
    hits: int
    true_hits: int
    precision: float
    recall: float
    false_hit_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "hits": self.hits,
            "true_hits": self.true_hits,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "false_hit_rate": round(self.false_hit_rate, 4),
        }


@dataclass
class BenchReport:
    data: str
    pairs: int
    positives: int
    entries: int
    insert_s: float
    insert_per_s: float
    embed_ms: dict[str, float | None]
    lookup_ms: dict[str, float | None]
    queries_per_s: float
    concurrency: int
    default: SweepRow
    sequential_queries_per_s: float = 0.0
    sweep: list[SweepRow] = field(default_factory=list)
    baseline: list[SweepRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "pairs": self.pairs,
            "positives": self.positives,
            "entries": self.entries,
            "insert_s": round(self.insert_s, 3),
            "insert_per_s": round(self.insert_per_s, 1),
            "embed_ms": self.embed_ms,
            "lookup_ms": self.lookup_ms,
            "queries_per_s": round(self.queries_per_s, 1),
            "sequential_queries_per_s": round(self.sequential_queries_per_s, 1),
            "concurrency": self.concurrency,
            "default": self.default.to_dict(),
            "sweep": [r.to_dict() for r in self.sweep],
            "baseline_cosine_only": [r.to_dict() for r in self.baseline],
        }


def _score(label: str | float, outcomes: list[tuple[bool, bool]], positives: int) -> SweepRow:
    hits = sum(1 for hit, _ in outcomes if hit)
    true_hits = sum(1 for hit, ok in outcomes if hit and ok)
    return SweepRow(
        label,
        hits,
        true_hits,
        true_hits / hits if hits else 1.0,
        true_hits / positives if positives else 0.0,
        (hits - true_hits) / len(outcomes) if outcomes else 0.0,
    )


def _pct(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99)}


async def run_bench(
    data: Path,
    *,
    pairs: int = 5000,
    settings: CacheSettings | None = None,
    home: Path | None = None,
    thresholds: tuple[float, ...] = DEFAULT_SWEEP,
    fill: int = 0,
    concurrency: int = 32,
    baseline: bool = True,
    cache: SemanticCache | None = None,
    progress: Any = None,
) -> BenchReport:
    rows = load_pairs(data, pairs)
    if not rows:
        raise ValueError(f"no usable pairs in {data}")
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="dp-cache-bench-") as tmp:
        cache = cache or SemanticCache(settings or CacheSettings(), home or Path(tmp))
        async with cache:
            await cache.truncate(SCOPE)
            policy = cache.policy(SCOPE)
            await cache.embedder(policy.embedder).embed(["warm up"])
            say(f"inserting {len(rows)} entries")
            started = time.perf_counter()
            for i in range(0, len(rows), 1000):
                chunk = rows[i : i + 1000]
                await cache.insert_many(SCOPE, [(a, str(i + j)) for j, (a, _, _) in enumerate(chunk)])
            insert_s = time.perf_counter() - started
            if fill:
                say(f"adding {fill} synthetic entries")
                await _fill(cache, fill, rows)
            say(f"probing with {len(rows)} queries")
            embed_ms: list[float] = []
            lookup_ms: list[float] = []
            outcomes: list[tuple[bool, bool]] = []
            vectors = []
            probe_started = time.perf_counter()
            for i, (_, b, label) in enumerate(rows):
                result = await cache.query(SCOPE, b, log=False)
                embed_ms.append(result.embed_ms)
                lookup_ms.append(result.lookup_ms)
                outcomes.append((result.hit, result.hit and result.answer == str(i) and label == 1))
                vectors.append(result.vectors)
            sequential_qps = len(rows) / (time.perf_counter() - probe_started)
            positives = sum(1 for _, _, label in rows if label == 1)
            default = _score("default", outcomes, positives)
            say("sweeping thresholds")
            sweep = [
                await _sweep(
                    cache,
                    rows,
                    vectors,
                    policy.model_copy(update={"threshold_short": t, "threshold_long": t}),
                    positives,
                    t,
                )
                for t in thresholds
            ]
            plain = []
            if baseline:
                for t in thresholds:
                    p = policy.model_copy(
                        update={"threshold_short": t, "threshold_long": t, "guards": False, "margin": 0.0}
                    )
                    plain.append(await _sweep(cache, rows, vectors, p, positives, t))
            say(f"end to end, {concurrency} concurrent clients")
            qps = await _throughput(cache, [b for _, b, _ in rows], concurrency)
            entries = (await cache.stats(SCOPE)).entries
            await cache.truncate(SCOPE)
    return BenchReport(
        str(data),
        len(rows),
        positives,
        entries,
        insert_s,
        len(rows) / insert_s if insert_s else 0.0,
        _pct(embed_ms),
        _pct(lookup_ms),
        qps,
        concurrency,
        default,
        sequential_qps,
        sweep,
        plain,
    )


async def _sweep(
    cache: SemanticCache,
    rows: list[tuple[str, str, int]],
    vectors: list[Any],
    policy: Any,
    positives: int,
    threshold: float,
) -> SweepRow:
    def run() -> list[tuple[bool, bool]]:
        out = []
        for i, (_, b, label) in enumerate(rows):
            qvec, cvec = vectors[i]
            result, _ = cache._lookup_sync(SCOPE.key, key_for_messages(b), qvec, cvec, policy)
            out.append((result.hit, result.hit and result.answer == str(i) and label == 1))
        return out

    return _score(threshold, await asyncio.to_thread(run), positives)


async def _fill(cache: SemanticCache, n: int, rows: list[tuple[str, str, int]]) -> None:
    """Synthetic entries (random unit vectors) to measure lookups in a large scope without embedding them."""
    rng = np.random.default_rng(0)
    probe = (await cache.embedder(cache.policy(SCOPE).embedder).embed(["x"]))[0]
    for start in range(0, n, 10_000):
        size = min(10_000, n - start)
        v = rng.standard_normal((size, probe.shape[0])).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        items = [(f"synthetic question {start + j}", f"synthetic answer {start + j}") for j in range(size)]
        await cache.insert_many(SCOPE, items, vectors=[(row, None) for row in v])


async def _throughput(cache: SemanticCache, queries: list[str], concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(q: str) -> None:
        async with semaphore:
            await cache.query(SCOPE, q, log=False)

    started = time.perf_counter()
    await asyncio.gather(*(one(q) for q in queries))
    return len(queries) / (time.perf_counter() - started)


def write_outputs(report: BenchReport, out_dir: Path, name: str = "cache_bench") -> list[Path]:
    """A CSV of the sweep, the whole report as JSON, and a PNG precision/recall plot when matplotlib is there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    csv_path = out_dir / f"{name}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["curve", "threshold", "hits", "true_hits", "precision", "recall", "false_hit_rate"])
        writer.writeheader()
        for curve, rows in (
            ("default", [report.default]),
            ("datapilot", report.sweep),
            ("cosine_only", report.baseline),
        ):
            for r in rows:
                writer.writerow({"curve": curve, **r.to_dict()})
    written.append(csv_path)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2))
    written.append(json_path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([r.recall for r in report.sweep], [r.precision for r in report.sweep], "o-", label="DataPilot")
    if report.baseline:
        ax.plot([r.recall for r in report.baseline], [r.precision for r in report.baseline], "s--", label="cosine only")
    ax.plot([report.default.recall], [report.default.precision], "r*", markersize=14, label="defaults")
    ax.set_xlabel("recall")
    ax.set_ylabel("hit precision")
    ax.set_title(f"semantic cache on {Path(report.data).name} ({report.pairs} pairs)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    written.append(png)
    return written
