"""Knowledge retrieval: quality (recall@1, recall@5, MRR@10), ingestion speed and query latency.

The corpus is the project's own documentation (README.md and docs/*.md); the questions, each with the
passage that answers it, are in benchmarks/data/rag_questions.json. A retrieved chunk counts as the
answer when it comes from the question's file and covers at least half of the answering passage.

* quality: dense (MiniLM + faiss), keyword (BM25) and hybrid (reciprocal rank fusion) retrieval;
* ingestion: the corpus copied ``--copies`` times into a second space, timed from the first add to
  the last document done (parse, chunk, embed, store, index), against embedding the same chunk texts
  straight through the embedder (raw embeddings/s);
* latency: ``KnowledgeBase.retrieve`` per question (query embedding included, no LLM), p50 and p99.

    .venv/bin/python benchmarks/rag_retrieval.py [--strategy size] [--copies 8] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from datapilot.rag import ChunkingConfig, KnowledgeBase, KnowledgeSettings, Passage

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "benchmarks" / "data" / "rag_questions.json"
MODES = ("dense", "keyword", "hybrid")


def passage_span(text: str, passage: str) -> tuple[int, int]:
    m = re.search(r"\s+".join(re.escape(w) for w in passage.split()), text)
    if m is None:
        raise SystemExit(f"passage not found in its source: {passage!r}")
    return m.start(), m.end()


def answers(p: Passage, source: str, span: tuple[int, int]) -> bool:
    if p.source != source:
        return False
    overlap = min(p.chunk.end, span[1]) - max(p.chunk.start, span[0])
    return overlap >= 0.5 * (span[1] - span[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(QUESTIONS.read_text())
    questions = data["questions"]
    corpus = [ROOT / rel for rel in data["corpus"]]
    spans = {q["id"]: passage_span((ROOT / q["source"]).read_text(), q["passage"]) for q in questions}
    chunking = ChunkingConfig(strategy=args.strategy, chunk_size=args.chunk_size, chunk_overlap=args.overlap)
    with tempfile.TemporaryDirectory() as home:
        async with KnowledgeBase(KnowledgeSettings(ingest_workers=args.workers), home) as kb:
            await kb.embedder.embed(["warm up the model"])  # loading the model is not ingestion
            await kb.create_space("docs", chunking=chunking)
            for path in corpus:
                await kb.add_file("docs", path, source=str(path.relative_to(ROOT)))
            docs = await kb.wait("docs", [d.id for d in await kb.documents("docs")])
            failed = [d.source for d in docs if d.status != "done"]
            if failed:
                raise SystemExit(f"ingestion failed: {failed}")
            n_chunks = sum(d.chunks for d in docs)

            # quality ----------------------------------------------------------------------------------
            quality: dict[str, dict[str, float]] = {}
            misses: dict[str, list[str]] = {}
            for mode in MODES:
                r1 = r5 = rr = 0.0
                misses[mode] = []
                for q in questions:
                    found = await kb.retrieve("docs", q["question"], k=10, mode=mode)
                    rank = next((i for i, p in enumerate(found, 1) if answers(p, q["source"], spans[q["id"]])), None)
                    r1 += rank == 1
                    r5 += rank is not None and rank <= 5
                    rr += 1.0 / rank if rank else 0.0
                    if rank is None or rank > 5:
                        misses[mode].append(q["question"])
                n = len(questions)
                quality[mode] = {"recall@1": r1 / n, "recall@5": r5 / n, "mrr@10": rr / n}

            # latency (k=5, as an answer would use) -----------------------------------------------------
            latency: dict[str, dict[str, float]] = {}
            for mode in MODES:
                times: list[float] = []
                for _ in range(args.rounds):
                    for q in questions:
                        t0 = time.perf_counter()
                        await kb.retrieve("docs", q["question"], k=5, mode=mode)
                        times.append((time.perf_counter() - t0) * 1000)
                latency[mode] = {"p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99)}

            # ingestion vs raw embedding ---------------------------------------------------------------
            await kb.create_space("ingest", chunking=chunking)
            blobs = [(str(p.relative_to(ROOT)), p.read_bytes()) for p in corpus]
            t0 = time.perf_counter()
            ids = []
            for copy in range(args.copies):
                for name, blob in blobs:
                    # A marker line makes every copy new content (a copy of the same bytes would be a no-op).
                    stem, dot, ext = name.rpartition(".")
                    doc = await kb.add_bytes(
                        "ingest", f"copy{copy}/{stem}{dot}{ext}", blob + f"\n\ncopy {copy}\n".encode()
                    )
                    ids.append(doc.id)
            ingested = await kb.wait("ingest", ids)
            ingest_s = time.perf_counter() - t0
            ingest_chunks = sum(d.chunks for d in ingested)
            texts: list[str] = []
            for d in ingested:
                for c in await kb.chunks("ingest", d.id, 0, 10_000):
                    texts.append(f"{c.section}\n{c.text}" if c.section else c.text)
            t0 = time.perf_counter()
            await kb.embedder.embed(texts)
            raw_s = time.perf_counter() - t0

    return {
        "corpus_files": len(corpus),
        "chunks": n_chunks,
        "questions": len(questions),
        "chunking": chunking.model_dump(),
        "quality": quality,
        "latency": latency,
        "ingestion": {
            "documents": len(ingested),
            "chunks": ingest_chunks,
            "seconds": ingest_s,
            "chunks_per_s": ingest_chunks / ingest_s,
            "raw_embeddings_per_s": len(texts) / raw_s,
            "ratio": (ingest_chunks / ingest_s) / (len(texts) / raw_s),
        },
        "misses": misses,
    }


def report(result: dict[str, Any], console: Console) -> None:
    console.print(
        f"corpus: {result['corpus_files']} files, {result['chunks']} chunks "
        f"({result['chunking']['strategy']}, {result['chunking']['chunk_size']} tokens); "
        f"{result['questions']} questions"
    )
    table = Table("retriever", "recall@1", "recall@5", "MRR@10", "query p50 ms", "query p99 ms")
    for mode in MODES:
        q, lat = result["quality"][mode], result["latency"][mode]
        table.add_row(
            mode, f"{q['recall@1']:.3f}", f"{q['recall@5']:.3f}", f"{q['mrr@10']:.3f}",
            f"{lat['p50_ms']:.2f}", f"{lat['p99_ms']:.2f}",
        )  # fmt: skip
    console.print(table)
    ing = result["ingestion"]
    console.print(
        f"ingestion: {ing['documents']} documents, {ing['chunks']} chunks in {ing['seconds']:.2f} s = "
        f"{ing['chunks_per_s']:.0f} chunks/s; raw embeddings {ing['raw_embeddings_per_s']:.0f}/s; "
        f"ratio {ing['ratio']:.2f}"
    )
    for mode, missed in result["misses"].items():
        if mode == "hybrid" and missed:
            console.print(f"[dim]hybrid misses (not in top 5): {missed}[/]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="size", help="chunking strategy for the corpus")
    parser.add_argument("--chunk-size", type=int, default=160)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--copies", type=int, default=8, help="copies of the corpus for the ingestion timing")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions for latency")
    parser.add_argument("--workers", type=int, default=2, help="ingestion workers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    report(result, Console())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
