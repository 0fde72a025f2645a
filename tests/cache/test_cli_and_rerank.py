"""The ``datapilot cache`` commands on the embedded store, and the optional reranker stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datapilot.cache import HashEmbedder, SemanticCache
from datapilot.cli import app
from datapilot.core.config import CacheRerankerConfig, CacheSettings, ModelConfig
from datapilot.core.errors import ConfigError
from datapilot.models.manager import ModelManager

from ..conftest import EMBED_MODEL, Server
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


def _reranked_settings(**reranker: object) -> CacheSettings:
    settings = hash_settings(reranker="second", threshold_short=0.3, threshold_long=0.3)
    settings.rerankers["second"] = CacheRerankerConfig.model_validate(reranker)
    return settings


async def _check_reranked(cache: SemanticCache, same_question: str) -> None:
    async with cache:
        await cache.insert("m", "How do I reset my password?", "Use the reset link.")
        same = await cache.query("m", same_question)  # not a repeat: the reranker scores it, and agrees
        assert same.hit and same.answer == "Use the reset link."
        # Close enough for the hashed bag of words, not for the reranker.
        other = await cache.query("m", "How do I reset my router admin password?")
        assert not other.hit and other.reason == "reranker"
        assert (await cache.stats("m")).entries == 1


async def test_a_rerank_model_served_by_datapilot_is_the_second_stage(server: Server, tmp_path: Path) -> None:
    """The real path: MiniLM served by a DataPilot server scores (query, candidate) through /v1/rerank,
    as kind ``datapilot`` (a DataPilot server) and kind ``rerank_api`` (any Cohere/Jina-style endpoint).
    MiniLM puts "How can I ..." at 0.99 and the router question at 0.68."""
    for kind in ("datapilot", "rerank_api"):
        settings = _reranked_settings(kind=kind, base_url=server.v1, model=EMBED_MODEL, threshold=0.93)
        cache = SemanticCache(settings, tmp_path / kind, embedders={"default": HashEmbedder()})
        await _check_reranked(cache, "How can I reset my password?")


async def test_a_rerank_model_of_this_process_and_clear_errors(tmp_path: Path) -> None:
    manager = ModelManager([ModelConfig(name="words", backend="scripted")], tmp_path)
    await manager.start()
    try:
        # The scripted reranker scores the share of the query's words in the candidate: 6/7 and 6/8 here.
        settings = _reranked_settings(kind="datapilot", model="words", threshold=0.8)
        cache = SemanticCache(settings, tmp_path / "local", embedders={"default": HashEmbedder()}, local_client=manager)
        await _check_reranked(cache, "how do I reset my password? thanks")
    finally:
        await manager.close()
    for reranker, message in [
        ({"kind": "datapilot", "model": "words"}, "needs a running DataPilot server"),
        ({"kind": "datapilot"}, "needs model"),
        ({"kind": "rerank_api", "model": "x"}, "needs model and base_url"),
        ({"kind": "cross_encoder"}, "needs path"),
        ({"kind": "nope"}, "unknown cache reranker kind 'nope'; known: cross_encoder, datapilot, rerank_api"),
    ]:
        cache = SemanticCache(_reranked_settings(**reranker), tmp_path / "bad", embedders={"default": HashEmbedder()})
        async with cache:
            await cache.insert("m", "How do I reset my password?", "Use the reset link.")
            with pytest.raises(ConfigError, match=re.escape(message)):
                await cache.query("m", "how can i reset my password")  # no repeat: the reranker is needed
