"""Fixtures for the data-source, text-to-SQL and chat-scene tests: the sample database, scripted
models, and throwaway PostgreSQL / MariaDB servers started by the project's script."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from datapilot.core.config import DataSettings, ModelConfig
from datapilot.datasource import DataSources, build_sample_database
from datapilot.models.manager import ModelManager


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_database(tmp_path_factory.mktemp("sample") / "sample.sqlite")


@pytest.fixture
async def sources(tmp_path: Path) -> AsyncIterator[DataSources]:
    ds = DataSources(DataSettings(), tmp_path / "home")
    yield ds
    await ds.close()


ScriptedFactory = Callable[..., Awaitable[ModelManager]]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[ScriptedFactory]:
    """``await scripted(["reply 1", "reply 2"])``: a started manager serving model ``s`` with those replies."""
    made: list[ModelManager] = []

    async def make(replies: list[str], name: str = "s") -> ModelManager:
        manager = ModelManager([ModelConfig(name=name, backend="scripted", params={"replies": replies})], tmp_path)
        await manager.start()
        made.append(manager)
        return manager

    yield make
    for m in made:
        await m.close()
