"""The ``datapilot cache`` commands on the embedded store, and the optional reranker stage."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from datapilot.cache import HashEmbedder, SemanticCache
from datapilot.cli import app

from .conftest import hash_settings


def test_cache_commands_on_the_embedded_store(tmp_path: Path) -> None:
    config = tmp_path / "datapilot.toml"
    config.write_text(
        '[cache]\n[cache.embedders.default]\nkind = "hash"\n[cache.defaults]\nthreshold_short = 0.6\nmargin = 0.0\n'
    )
    common = ["--config", str(config), "--home", str(tmp_path / "home")]
    runner = CliRunner()
    ok = runner.invoke(app, ["cache", "insert", "-m", "m", "What is WAL mode?", "A SQLite journal mode.", *common])
    assert ok.exit_code == 0, ok.output
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "What is faiss?", "answer": "A vector search library."}) + "\n")
    assert runner.invoke(app, ["cache", "insert", "-m", "m", "--file", str(rows), *common]).exit_code == 0
    hit = runner.invoke(app, ["cache", "query", "-m", "m", "what is wal mode", "--json", *common])
    assert hit.exit_code == 0 and json.loads(hit.stdout)["answer"] == "A SQLite journal mode."
    miss = runner.invoke(app, ["cache", "query", "-m", "other", "What is WAL mode?", "--json", *common])
    assert miss.exit_code == 1 and json.loads(miss.stdout)["hit"] is False
    stats = runner.invoke(app, ["cache", "stats", "-m", "m", "--json", *common])
    assert json.loads(stats.stdout)["entries"] == 2
    assert runner.invoke(app, ["cache", "truncate", "-m", "m", "--yes", *common]).exit_code == 0
    assert json.loads(runner.invoke(app, ["cache", "stats", "-m", "m", "--json", *common]).stdout)["entries"] == 0


class Picky:
    """A reranker that accepts only candidates sharing the query's first word."""

    threshold = 0.5

    async def score(self, query: str, candidates: list[str]) -> list[float]:
        return [float(c.split()[0].lower() == query.split()[0].lower()) for c in candidates]


async def test_a_configured_reranker_gets_the_last_word(tmp_path: Path) -> None:
    settings = hash_settings(reranker="picky")
    cache = SemanticCache(settings, tmp_path, embedders={"default": HashEmbedder()}, rerankers={"picky": Picky()})
    async with cache:
        await cache.insert("m", "How do I bake bread at home", "knead")
        assert (await cache.query("m", "how do I bake bread at home")).hit
        rejected = await cache.query("m", "Why do I bake bread at home")
        assert not rejected.hit and rejected.reason == "reranker"
