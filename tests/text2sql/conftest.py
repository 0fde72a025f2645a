"""Fixtures for the data-source, text-to-SQL and chat-scene tests: the sample database, scripted
models, and throwaway PostgreSQL / MariaDB servers started by the project's script."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from datapilot.core.config import DataSettings
from datapilot.datasource import DataSources, build_sample_database
from datapilot.models.manager import ModelManager
from tests.conftest import ScriptedManagers


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
def scripted(scripted_managers: ScriptedManagers) -> ScriptedFactory:
    """``await scripted(["reply 1", "reply 2"])``: a started manager serving model ``s`` with those replies."""

    async def make(replies: list[str], name: str = "s") -> ModelManager:
        return await scripted_managers(name, replies=replies)

    return make
