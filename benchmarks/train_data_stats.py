"""What the training-pair generator writes for the sample and the clinic databases, for people to judge.

For each database: how many pairs, how long generation took, the pairs per template family, per
language and per difficulty, the leakage against the shipped dev / held-out sets (pairs whose question
or gold SQL is in them), and ``--examples`` random queries (default 10) with all their questions.

    .venv/bin/python benchmarks/train_data_stats.py [--seed 0] [--max-pairs 2000] [--examples 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from datapilot.datasource import SQLAlchemyConnector, build_sample_database
from datapilot.text2sql import dev_set_path, ensure_heldout_database, heldout_set_path, load_questions
from datapilot.train._generate import Pair, generate_pairs, leaked

console = Console()


async def _pairs(path: Path, db_id: str, seed: int, max_pairs: int) -> tuple[list[Pair], float]:
    connector = SQLAlchemyConnector(f"sqlite:///{path}")
    try:
        started = time.perf_counter()
        pairs = await generate_pairs(connector, db_id, seed=seed, max_pairs=max_pairs)
        return pairs, time.perf_counter() - started
    finally:
        await connector.close()


def _counts(title: str, counts: Counter[str], total: int) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("pairs", justify="right")
    table.add_column("share", justify="right")
    for key, n in counts.most_common():
        table.add_row(key, str(n), f"{n / total:.1%}")
    return table


def _report(db_id: str, pairs: list[Pair], seconds: float, eval_path: Path, examples: int, seed: int) -> dict[str, Any]:
    queries = {p.query for p in pairs}
    console.rule(f"[bold]{db_id}[/]: {len(pairs)} pairs over {len(queries)} queries in {seconds:.1f} s")
    families = Counter(p.template for p in pairs)
    languages = Counter(p.language for p in pairs)
    difficulties = Counter(p.difficulty for p in pairs)
    console.print(_counts("per template family", families, len(pairs)))
    console.print(_counts("per language", languages, len(pairs)))
    console.print(_counts("per difficulty", difficulties, len(pairs)))
    gold = [q for q in load_questions(eval_path) if q.db_id == db_id]
    hits = leaked(pairs, [q.question for q in gold], [q.query for q in gold])
    console.print(
        f"leakage against {eval_path.name} ({len(gold)} questions): {len(hits)} pairs share a question or a gold "
        f"query ({len({p.query for p in hits})} queries) and would be dropped by check_no_leakage"
    )
    by_sql: dict[str, list[Pair]] = {}
    for p in pairs:
        by_sql.setdefault(p.query, []).append(p)
    rng = random.Random(seed)
    console.print(f"\n[bold]{examples} random queries[/]")
    for sql in rng.sample(sorted(by_sql), min(examples, len(by_sql))):
        group = by_sql[sql]
        console.print(f"\n[cyan]{group[0].template}[/] / {group[0].difficulty}: {sql}", markup=True, highlight=False)
        for p in group:
            console.print(f"   {p.language}: {p.question}", markup=False, highlight=False)
    return {
        "db_id": db_id,
        "pairs": len(pairs),
        "queries": len(queries),
        "seconds": round(seconds, 2),
        "families": dict(families.most_common()),
        "languages": dict(languages),
        "difficulties": dict(difficulties),
        "leaked_pairs": len(hits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pairs", type=int, default=2000)
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        databases = [
            ("sample", build_sample_database(folder / "sample.sqlite"), dev_set_path()),
            ("clinic", ensure_heldout_database(folder), heldout_set_path()),
        ]
        figures = []
        for db_id, path, eval_path in databases:
            pairs, seconds = asyncio.run(_pairs(path, db_id, args.seed, args.max_pairs))
            figures.append(_report(db_id, pairs, seconds, eval_path, args.examples, args.seed))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")
        console.print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
