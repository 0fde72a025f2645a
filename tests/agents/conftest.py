"""Fixtures for the agents tests: the sample database and scripted models driven by prompt rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from datapilot.apps import ChatContext
from datapilot.core.config import DataSettings
from datapilot.datasource import DataSources
from datapilot.models.manager import ModelManager
from tests.conftest import ScriptedManagers

PLAN = (
    '{"steps": [{"agent": "analyst", "task": "orders per status"}, '
    '{"agent": "chart", "task": "chart it", "after": [1]}, '
    '{"agent": "reporter", "task": "write the report", "after": [1, 2]}]}'
)
SQL_ACTION = (
    "```json\n{'tool': 'run_sql', 'args': {'sql': 'SELECT status, COUNT(*) AS n FROM orders GROUP BY status',},}\n```"
)

# Rules the scripted backend matches against the whole prompt: one script per agent.
HAPPY_RULES: list[list[Any]] = [
    ["You are planner", [PLAN]],
    ["You are analyst", [SQL_ACTION, '{"final": "delivered orders dominate"}']],
    ["You are chart", ['{"tool": "make_chart", "args": {"table": "t1", "kind": "pie"}}', '{"final": "pie drawn"}']],
    ["You are reporter", ["Most orders were delivered; a small share was cancelled or is still pending."]],
    ["You are reviewer", ['{"approve": true, "notes": "the report answers the goal"}']],
]

Scripted = Callable[..., Awaitable[ModelManager]]


@pytest.fixture(scope="session")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-home")


@pytest.fixture
async def sources(data_home: Path) -> AsyncIterator[DataSources]:
    ds = DataSources(DataSettings(), data_home)
    yield ds
    await ds.close()


@pytest.fixture
def scripted(scripted_managers: ScriptedManagers) -> Scripted:
    """``await scripted(rules)``: a started manager serving model ``s`` that answers by prompt rules."""

    async def make(rules: list[list[Any]], name: str = "s", **params: Any) -> ModelManager:
        return await scripted_managers(name, rules=rules, **params)

    return make


@pytest.fixture
def context(sources: DataSources) -> Callable[[ModelManager], ChatContext]:
    def make(manager: ModelManager, model: str = "s") -> ChatContext:
        return ChatContext(manager, model, sources, DataSettings())

    return make
