"""Fixtures for the agents tests: the sample database and scripted models driven by prompt rules.

The scripted model enforces JSON schemas and tool calls (a valid scripted reply stands, anything else
becomes the smallest valid instance), so scripts for the structured path answer tool calls in the
envelope the serving layer shows models, ``{"tool_calls": [...]}`` (``call``); the free-text path
reads that envelope too, so ``HAPPY_RULES`` drive both paths.
"""

from __future__ import annotations

import json
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


def call(name: str, **arguments: Any) -> str:
    """A tool call as a model answers one: the envelope the serving layer constrains it to."""
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})


SQL_CALL = call("run_sql", sql="SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
REPORT = "Most orders were delivered; a small share was cancelled or is still pending."
REVIEW = '{"approve": true, "notes": "the report answers the goal"}'

# Rules the scripted backend matches against the whole prompt: one script per agent.
HAPPY_RULES: list[list[Any]] = [
    ["You are planner", [PLAN]],
    ["You are analyst", [SQL_CALL, "delivered orders dominate"]],
    ["You are chart", [call("make_chart", table="t1", kind="pie"), "pie drawn"]],
    ["You are reporter", [REPORT]],
    ["You are reviewer", [REVIEW]],
]
# The same run in the tolerant forms of the free-text path (fences, single quotes, trailing commas).
TEXT_RULES: list[list[Any]] = [
    ["You are planner", [PLAN]],
    ["You are analyst", [SQL_ACTION, '{"final": "delivered orders dominate"}']],
    ["You are chart", ['{"tool": "make_chart", "args": {"table": "t1", "kind": "pie"}}', '{"final": "pie drawn"}']],
    ["You are reporter", [REPORT]],
    ["You are reviewer", [REVIEW]],
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
