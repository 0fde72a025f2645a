"""Decode speed of a fine-tuned model (base GGUF + GGUF LoRA adapter, as served) against its base.

    .venv/bin/python benchmarks/lora_decode.py --adapter HOME/models/trained/NAME/adapter.gguf \
        [--model smollm2-135m-instruct] [--tokens 128] [--runs 5]

Both run on llama.cpp with the same threads, prompt and greedy decoding, one after the other; the
figure is the median tokens/s over ``--runs`` generations of ``--tokens`` tokens (stop strings off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = (
    "-- SQLite database. Each question is answered by one read-only SQL query.\n\n"
    "CREATE TABLE orders (\n  order_id INTEGER PRIMARY KEY,\n  customer_id INTEGER,\n  order_date TEXT,\n"
    "  status TEXT\n);\n\n-- Question: How many orders were shipped in each month of 2024?\nSELECT"
)


def speed(gguf: Path, adapter: Path | None, tokens: int, runs: int, threads: int) -> float:
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {"lora_path": str(adapter)} if adapter else {}
    llm = Llama(str(gguf), n_ctx=2048, n_threads=threads, verbose=False, **kwargs)
    try:
        llm.create_completion(PROMPT, max_tokens=8, temperature=0)  # warm-up
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            out: Any = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0, stop=[])
            n = int(out["usage"]["completion_tokens"])
            rates.append(n / (time.perf_counter() - started))
        return statistics.median(rates)
    finally:
        llm.close()


def main() -> None:
    from datapilot.core.config import load_settings
    from datapilot.models.assets import resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the base model (configured name)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    settings = load_settings()
    config = settings.model(args.model)
    if config is None:
        raise SystemExit(f"model {args.model!r} is not configured")
    gguf = resolve_model_path(config, settings.home)
    if gguf is None:
        raise SystemExit(f"{args.model} has no local GGUF")
    base = speed(gguf, None, args.tokens, args.runs, args.threads)
    tuned = speed(gguf, args.adapter, args.tokens, args.runs, args.threads)
    print(f"base    {base:7.1f} tok/s")
    print(f"adapter {tuned:7.1f} tok/s  (ratio {tuned / base:.3f})")


if __name__ == "__main__":
    main()
