"""AWEL fixtures: scripted models in-process for logic, a real server with the flows folder for HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datapilot.awel import FlowResources
from datapilot.core.config import ModelConfig
from datapilot.models import ModelManager
from datapilot.retrieval import InMemoryVectorIndex
from datapilot.testing import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
CHAT_MODEL = "gemma-3-270m"
EMBED_MODEL = "all-MiniLM-L6-v2"

@pytest.fixture
async def scripted() -> AsyncIterator[ModelManager]:
    manager = ModelManager(
        [ModelConfig(name="echo", backend="scripted"), ModelConfig(name="embed", backend="scripted")],
        Path("/nonexistent"),
    )
    await manager.start()
    yield manager
    await manager.close()


@pytest.fixture
def resources(scripted: ModelManager) -> FlowResources:
    return FlowResources.embedded(scripted, index_factory=InMemoryVectorIndex)


@pytest.fixture(scope="session")
def awel_server(server: ServerProcess) -> ServerProcess:
    """The session's one real server (tests/conftest.py), which loads its flows from ``flows_dir``."""
    return server
