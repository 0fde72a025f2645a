"""The cache benchmark behind ``datapilot bench cache``: hit precision, recall, false hits and latency
on a paraphrase data set, for a sweep of thresholds.

Protocol (as in shared/data/cache/README.md): store each pair's first text with its row number as the
answer, probe with the second. A hit on a pair labelled 1 that returns its own row is a true hit; any
other hit is a false hit. Precision = true hits / hits, recall = true hits / pairs labelled 1,
false-hit rate = false hits / probes. Embedding and lookup latency are measured separately.

Every false hit is also put in one of four kinds, because the protocol counts some right answers as
wrong ones: QQP repeats questions across pairs, so a probe can be stored, word for word, under another
pair's row, and a cache that serves exact repeats must return that row.

* ``near_miss``: the probe's own row, on a pair labelled 0: the cache took a different question for
  the same one. These are the errors a verifier can remove.
* ``same_text``: another row whose stored question is the probe itself (case, spacing and punctuation
  aside). Any cache that answers repeated questions scores these as false hits.
* ``known_duplicate``: another row whose question the data set's own labels join to the probe's
  (a chain of pairs labelled 1, anywhere in the file).
* ``other_row``: another row, with no label either way.

``lenient_precision`` counts ``same_text`` and ``known_duplicate`` hits as right; the headline figure
stays the strict one. ``verbatim_elsewhere`` counts the probes stored word for word under another row:
with them, no cache that serves exact repeats can pass ``r·P / (r·P + verbatim_elsewhere)`` precision at
recall ``r`` (``P`` duplicates), however good its verifier.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.cache._cache import SemanticCache, percentile
from datapilot.cache._key import key_for_messages
from datapilot.cache._types import CacheResult, Scope
from datapilot.core.config import CacheSettings

SCOPE = Scope("bench")
DEFAULT_SWEEP = (0.75, 0.80, 0.83, 0.85, 0.87, 0.90, 0.93, 0.95, 0.97)
RERANK_SWEEP = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)  # swept too when the scope has a reranker


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


FALSE_KINDS = ("near_miss", "same_text", "known_duplicate", "other_row")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class Truth:
    """What the data set says about a hit: the probe's own row, the same text, a labelled duplicate.

    Duplicates are the connected groups of texts joined by pairs labelled 1 in the whole file (not only
    the pairs benchmarked), so a chain a~b, b~c makes a and c duplicates.
    """

    def __init__(self, rows: list[tuple[str, str, int]], everything: list[tuple[str, str, int]]) -> None:
        self.rows = rows
        self._parent: dict[str, str] = {}
        for a, b, label in everything:
            if label == 1:
                self._union(_norm(a), _norm(b))
        stored: dict[str, set[int]] = {}
        for i, (a, _, _) in enumerate(rows):
            stored.setdefault(_norm(a), set()).add(i)
        self.verbatim_elsewhere = sum(
            1 for i, (a, b, _) in enumerate(rows) if _norm(b) != _norm(a) and stored.get(_norm(b), set()) - {i}
        )

    def _find(self, x: str) -> str:
        parent = self._parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def _union(self, x: str, y: str) -> None:
        rx, ry = self._find(x), self._find(y)
        if rx != ry:
            self._parent[rx] = ry

    def outcome(self, i: int, hit: bool, answer: str | None) -> str:
        """``miss``, ``true`` or one of :data:`FALSE_KINDS` for probe ``i``'s result."""
        if not hit:
            return "miss"
        a, b, label = self.rows[i]
        if answer == str(i):
            return "true" if label == 1 else "near_miss"
        k = int(answer) if answer is not None and answer.isdigit() else -1
        if not 0 <= k < len(self.rows):
            return "other_row"
        other = _norm(self.rows[k][0])
        if other == _norm(b):
            return "same_text"
        if self._find(other) in (self._find(_norm(b)), self._find(_norm(a)) if label == 1 else None):
            return "known_duplicate"
        return "other_row"


@dataclass
class SweepRow:
    threshold: float | str
    hits: int
    true_hits: int
    precision: float
    recall: float
    false_hit_rate: float
    false_hits: dict[str, int] = field(default_factory=dict)
    lenient_precision: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "hits": self.hits,
            "true_hits": self.true_hits,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "false_hit_rate": round(self.false_hit_rate, 4),
            "lenient_precision": round(self.lenient_precision, 4),
            **{k: self.false_hits.get(k, 0) for k in FALSE_KINDS},
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
    verbatim_elsewhere: int = 0

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
            "verbatim_elsewhere": self.verbatim_elsewhere,
            "precision_bound_at_default_recall": round(self.precision_bound(self.default.recall), 4),
            "default": self.default.to_dict(),
            "sweep": [r.to_dict() for r in self.sweep],
            "baseline_cosine_only": [r.to_dict() for r in self.baseline],
        }

    def precision_bound(self, recall: float) -> float:
        """The best strict precision at ``recall`` for a cache that serves exact repeats."""
        true_hits = recall * self.positives
        return true_hits / (true_hits + self.verbatim_elsewhere) if true_hits else 1.0


def _score(label: str | float, outcomes: list[str], positives: int) -> SweepRow:
    counts = Counter(outcomes)
    hits = len(outcomes) - counts["miss"]
    true_hits = counts["true"]
    lenient = true_hits + counts["same_text"] + counts["known_duplicate"]
    return SweepRow(
        label,
        hits,
        true_hits,
        true_hits / hits if hits else 1.0,
        true_hits / positives if positives else 0.0,
        (hits - true_hits) / len(outcomes) if outcomes else 0.0,
        {k: counts[k] for k in FALSE_KINDS},
        lenient / hits if hits else 1.0,
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
    truth = Truth(rows, load_pairs(data, 10**9))
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
            outcomes: list[str] = []
            vectors = []
            probe_started = time.perf_counter()
            for i, (_, b, _) in enumerate(rows):
                result = await cache.query(SCOPE, b, log=False)
                embed_ms.append(result.embed_ms)
                lookup_ms.append(result.lookup_ms)
                outcomes.append(truth.outcome(i, result.hit, result.answer))
                vectors.append(result.vectors)
            sequential_qps = len(rows) / (time.perf_counter() - probe_started)
            positives = sum(1 for _, _, label in rows if label == 1)
            default = _score("default", outcomes, positives)
            say("sweeping thresholds")
            scores: dict[tuple[int, int], float] = {}
            sweep = [
                await _sweep(
                    cache,
                    truth,
                    vectors,
                    policy.model_copy(update={"threshold_short": t, "threshold_long": t}),
                    positives,
                    t,
                    scores,
                )
                for t in thresholds
            ]
            if policy.reranker:  # the reranker's own threshold, at the default cosine thresholds
                sweep += [
                    await _sweep(cache, truth, vectors, policy, positives, f"rerank {r:g}", scores, r)
                    for r in RERANK_SWEEP
                ]
            plain = []
            if baseline:
                for t in thresholds:
                    p = policy.model_copy(
                        update={
                            "threshold_short": t,
                            "threshold_long": t,
                            "guards": False,
                            "margin": 0.0,
                            "reranker": None,
                        }
                    )
                    plain.append(await _sweep(cache, truth, vectors, p, positives, t))
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
        truth.verbatim_elsewhere,
    )


async def _sweep(
    cache: SemanticCache,
    truth: Truth,
    vectors: list[Any],
    policy: Any,
    positives: int,
    label: float | str,
    scores: dict[tuple[int, int], float] | None = None,
    rerank_threshold: float | None = None,
) -> SweepRow:
    """The outcomes at ``policy``, as ``query`` would give them: the reranker, when the policy names one,
    scores each probe's candidate (once: ``scores`` keeps them across the sweep)."""

    def run() -> list[tuple[CacheResult, Any]]:
        out = []
        for i, (_, b, _) in enumerate(truth.rows):
            qvec, cvec = vectors[i]
            out.append(cache._lookup_sync(SCOPE.key, key_for_messages(b), qvec, cvec, policy))
        return out

    looked = await asyncio.to_thread(run)
    outcomes = []
    reranker = cache._reranker(policy.reranker) if policy.reranker else None
    memo = scores if scores is not None else {}
    for i, (result, candidate) in enumerate(looked):
        if reranker is not None and candidate is not None:
            pair = (i, candidate.entry.id)
            if pair not in memo:
                memo[pair] = (await reranker.score(truth.rows[i][1], [candidate.entry.question]))[0]
            if memo[pair] < (reranker.threshold if rerank_threshold is None else rerank_threshold):
                result = CacheResult(False, similarity=candidate.similarity, reason="reranker")
        outcomes.append(truth.outcome(i, result.hit, result.answer))
    return _score(label, outcomes, positives)


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
        writer = csv.DictWriter(
            f,
            [
                "curve",
                "threshold",
                "hits",
                "true_hits",
                "precision",
                "recall",
                "false_hit_rate",
                "lenient_precision",
                *FALSE_KINDS,
            ],
        )
        writer.writeheader()
        cosine = [r for r in report.sweep if not isinstance(r.threshold, str)]
        reranked = [r for r in report.sweep if isinstance(r.threshold, str)]
        for curve, rows in (
            ("default", [report.default]),
            ("datapilot", cosine),
            ("datapilot_reranker", reranked),
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
    ax.plot([r.recall for r in cosine], [r.precision for r in cosine], "o-", label="DataPilot")
    ax.plot([r.recall for r in cosine], [r.lenient_precision for r in cosine], "o:", alpha=0.6, label="lenient")
    if reranked:
        ax.plot([r.recall for r in reranked], [r.precision for r in reranked], "^-", label="reranker threshold swept")
    if report.baseline:
        ax.plot([r.recall for r in report.baseline], [r.precision for r in report.baseline], "s--", label="cosine only")
    ax.plot([report.default.recall], [report.default.precision], "r*", markersize=14, label="defaults")
    ax.set_xlabel("recall")
    ax.set_ylabel("hit precision")
    ax.set_title(f"semantic cache on {Path(report.data).name} ({report.pairs} pairs)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    written.append(png)
    return written
