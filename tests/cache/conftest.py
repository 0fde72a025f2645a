"""Fixtures for the cache tests: a fresh embedded cache (SQLite + faiss) on the hash test embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from datapilot.cache import HashEmbedder, SemanticCache
from datapilot.core.config import CacheSettings


def hash_settings(**defaults: Any) -> CacheSettings:
    """Settings whose default embedder is the hashed bag of words (fast, deterministic)."""
    return CacheSettings.model_validate(
        {
            "embedders": {"default": {"kind": "hash"}},
            "defaults": {"threshold_short": 0.6, "threshold_long": 0.6, "margin": 0.0, **defaults},
        }
    )


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[SemanticCache]:
    c = SemanticCache(hash_settings(), tmp_path, embedders={"default": HashEmbedder()})
    async with c:
        yield c
