"""Plugins: tools and agents added from a local folder of ``.py`` files or from Python entry points
(group ``datapilot.agents``), registered only under names the allow-list permits.

A plugin module defines ``Tool`` objects (``@tool``) and ``AgentSpec`` objects at top level; an entry
point names one such object, or a module holding them. Nothing is imported by a name a request or a
plan gives: those only look names up in the registries.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from datapilot.agents._builtin import AgentSpec
from datapilot.agents._errors import PluginError
from datapilot.agents._tools import Tool
from datapilot.core.errors import DuplicateNameError, NotAllowedError
from datapilot.core.registry import Registry

ENTRY_POINT_GROUP = "datapilot.agents"


@dataclass
class PluginReport:
    loaded: list[str] = field(default_factory=list)  # "tool:NAME" / "agent:NAME"
    refused: list[str] = field(default_factory=list)  # names outside the allow-list, with the reason
    errors: list[str] = field(default_factory=list)  # sources that failed to load

    def to_dict(self) -> dict[str, list[str]]:
        return {"loaded": self.loaded, "refused": self.refused, "errors": self.errors}


def _objects(module: ModuleType) -> list[Any]:
    return [v for v in vars(module).values() if isinstance(v, Tool | AgentSpec)]


def _register(obj: Any, tools: Registry[Tool], agents: Registry[AgentSpec], source: str, report: PluginReport) -> None:
    registry: Registry[Any] = tools if isinstance(obj, Tool) else agents
    label = f"{registry.what}:{obj.name}"
    try:
        registry.register(obj.name, obj, plugin=True)
    except (PluginError, DuplicateNameError, NotAllowedError) as exc:
        report.refused.append(f"{label} from {source}: {exc.message}")
    else:
        report.loaded.append(label)


def load_folder(
    folder: str | Path, tools: Registry[Tool], agents: Registry[AgentSpec], report: PluginReport | None = None
) -> PluginReport:
    """Import each ``*.py`` in ``folder`` (sorted, files starting with ``_`` skipped) and register
    what it defines. A file that fails to import is reported, never fatal."""
    report = report or PluginReport()
    path = Path(folder)
    if not path.is_dir():
        raise PluginError(f"plugin folder {path} does not exist")
    for file in sorted(path.glob("*.py")):
        if file.name.startswith("_"):
            continue
        digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:8]
        name = f"datapilot_agent_plugin_{file.stem}_{digest}"
        try:
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise ImportError("not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            report.errors.append(f"{file.name}: {type(exc).__name__}: {exc}")
            continue
        for obj in _objects(module):
            _register(obj, tools, agents, file.name, report)
    return report


def load_entry_points(
    tools: Registry[Tool],
    agents: Registry[AgentSpec],
    report: PluginReport | None = None,
    group: str = ENTRY_POINT_GROUP,
) -> PluginReport:
    report = report or PluginReport()
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as exc:
            report.errors.append(f"entry point {ep.name}: {type(exc).__name__}: {exc}")
            continue
        found = _objects(obj) if isinstance(obj, ModuleType) else [obj]
        if not all(isinstance(o, Tool | AgentSpec) for o in found):
            report.errors.append(f"entry point {ep.name}: not a Tool, an AgentSpec or a module of them")
            continue
        for o in found:
            _register(o, tools, agents, f"entry point {ep.name}", report)
    return report
