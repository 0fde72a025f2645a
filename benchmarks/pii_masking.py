"""PII detection quality and masking cost (``datapilot.privacy``).

Generates N labelled texts, half English, half Chinese (``datapilot.privacy.generate_corpus``, seeded:
the same seed gives the same texts), with personal data of every kind planted at known positions and
sentences that must be left alone (SQL with numbers, order ids and order numbers, prices, dates, times,
versions, timestamps, barcodes, card and ID numbers with wrong check digits, MAC addresses). Prints
recall and precision per kind and overall (a detection counts only with the right kind and exact
boundaries), then the time to mask a prompt of about 500 tokens (p50/p99 over many runs) and to restore
its answer, whole and streamed token by token.

    .venv/bin/python benchmarks/pii_masking.py [--n 1000] [--seed 0] [--runs 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from datapilot.privacy import KINDS, Masker, approx_tokens, evaluate, generate_corpus, prompt_of_tokens


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": at(0.50) * 1e3, "p99_ms": at(0.99) * 1e3, "mean_ms": statistics.fmean(ordered) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="texts to generate (at least 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=2000, help="timed maskings of the 500-token prompt")
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    console = Console()

    cases = generate_corpus(max(500, args.n), args.seed)
    started = time.perf_counter()
    scores = evaluate(cases)
    detect_s = time.perf_counter() - started
    chars = sum(len(c.text) for c in cases)
    table = Table(title=f"PII detection: {len(cases)} texts (seed {args.seed}), exact kind and boundaries")
    for col in ("kind", "planted", "found right", "wrong", "missed", "recall", "precision"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    per_kind: dict[str, dict[str, float]] = {}
    figures: dict[str, object] = {"texts": len(cases), "seed": args.seed, "kinds": per_kind}
    for kind in (*KINDS, "overall"):
        s = scores[kind]
        table.add_row(kind, str(s.tp + s.fn), str(s.tp), str(s.fp), str(s.fn), f"{s.recall:.3f}", f"{s.precision:.3f}")
        per_kind[kind] = {"tp": s.tp, "fp": s.fp, "fn": s.fn, "recall": s.recall, "precision": s.precision}
        for label, examples in (("missed", s.misses), ("wrong", s.false)):
            if examples and kind != "overall":
                console.print(f"  {kind} {label}: {examples[:5]}")
    console.print(table)
    console.print(f"detection over the set: {detect_s * 1e3:.0f} ms for {chars:,} characters")

    prompt = prompt_of_tokens(args.tokens, args.seed + 1)
    samples: list[float] = []
    masked = prompt
    masker = Masker()
    for _ in range(max(10, args.runs)):
        masker = Masker()
        t = time.perf_counter()
        masked = masker.mask(prompt)
        samples.append(time.perf_counter() - t)
    mask_t = _percentiles(samples)
    # The answer echoes the masked prompt: restore it whole, and streamed in ~4-character pieces.
    restore_samples, stream_samples = [], []
    pieces = [masked[i : i + 4] for i in range(0, len(masked), 4)]
    for _ in range(max(10, args.runs // 4)):
        t = time.perf_counter()
        whole = masker.restore(masked)
        restore_samples.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = masker.restorer()
        streamed = "".join(r.feed(p) for p in pieces) + r.flush()
        stream_samples.append(time.perf_counter() - t)
    assert whole == prompt and streamed == prompt
    restore_t, stream_t = _percentiles(restore_samples), _percentiles(stream_samples)
    tokens = approx_tokens(prompt)
    console.print(
        f"mask a {tokens}-token prompt ({len(prompt)} chars, {sum(masker.counts.values())} values): "
        f"p50 {mask_t['p50_ms']:.3f} ms, p99 {mask_t['p99_ms']:.3f} ms"
    )
    console.print(
        f"restore its echo: whole p50 {restore_t['p50_ms']:.3f} ms; streamed in {len(pieces)} pieces "
        f"p50 {stream_t['p50_ms']:.3f} ms (p99 {stream_t['p99_ms']:.3f})"
    )
    figures |= {
        "prompt_tokens": tokens,
        "prompt_chars": len(prompt),
        "mask": mask_t,
        "restore_whole": restore_t,
        "restore_stream": stream_t,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
