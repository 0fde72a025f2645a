"""The DAG manager: loads flows from a folder (``.py``, ``.dsl``, ``.json``), binds them to the
environment, registers their triggers, and lists and runs them for the CLI and the REST API.

A flow that cannot load (bad syntax, an unknown operator, a model or store that is not configured)
is reported in ``errors`` by file and does not stop the others.

Flows loaded from files or added by code are the deployment's, shared by every tenant (a key's
``flows`` scopes limit which it may run). A flow added for a tenant (``add(dag, owner=...)``) is that
tenant's: others are answered as if it did not exist (``core.tenancy``).
"""

from __future__ import annotations

import logging
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapilot.awel._dag import DAG
from datapilot.awel._dsl import compile_dsl
from datapilot.awel._errors import FlowLoadError, FlowNotFoundError
from datapilot.awel._resources import FlowResources
from datapilot.awel._triggers import HttpTrigger
from datapilot.core.errors import DataPilotError
from datapilot.core.tenancy import can_see

log = logging.getLogger("datapilot.awel")

FLOW_SUFFIXES = (".py", ".dsl", ".json")


class MethodNotAllowedError(DataPilotError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


@dataclass(slots=True)
class FlowInfo:
    name: str
    description: str
    source: str | None
    nodes: int
    triggers: list[dict[str, Any]]
    owner: str | None = None  # the tenant owning it; None: shared (the deployment's)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "nodes": self.nodes,
            "triggers": self.triggers,
            "owner": self.owner,
        }


def _trigger_info(dag: DAG) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in dag.triggers:
        if isinstance(t, HttpTrigger):
            out.append(
                {
                    "type": "http",
                    "node": t.name,
                    "path": f"/api/v1/awel/trigger{t.endpoint}",
                    "methods": t.methods,
                    "streaming": t.streaming_response,
                }
            )
        else:
            out.append({"type": t.kind, "node": t.name})
    return out


def read_flow_file(path: Path, resources: FlowResources | None = None) -> list[DAG]:
    """The DAGs a flow file defines. ``.py`` files are code you trust (like any plugin); ``.dsl`` and
    ``.json`` resolve names only through the registries."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".dsl":
            dags = compile_dsl(path.read_text(encoding="utf-8"), resources)
        elif suffix == ".json":
            dags = [DAG.from_json(path.read_text(encoding="utf-8"), resources)]
        elif suffix == ".py":
            found = runpy.run_path(str(path), run_name=f"datapilot_flow_{path.stem}")
            dags = []
            for value in found.values():
                if isinstance(value, DAG) and all(value is not d for d in dags):
                    dags.append(value)
        else:
            raise FlowLoadError(f"{path.name}: flows are .py, .dsl or .json files")
    except DataPilotError as e:
        raise FlowLoadError(f"{path.name}: {e.message}") from e
    except OSError as e:
        raise FlowLoadError(f"{path.name}: cannot read: {e}") from e
    except Exception as e:  # a .py flow may raise anything
        raise FlowLoadError(f"{path.name}: {type(e).__name__}: {e}") from e
    if not dags:
        raise FlowLoadError(f"{path.name} defines no DAG")
    for d in dags:
        d.source_file = str(path)
    return dags


def flow_files(folder: Path) -> list[Path] | None:
    """The flow files in ``folder`` in name order (``_``-prefixed ones are helpers); None if no folder."""
    if not folder.is_dir():
        return None
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in FLOW_SUFFIXES and p.is_file() and not p.name.startswith("_")
    )


class DAGManager:
    def __init__(self, resources: FlowResources | None = None) -> None:
        self.resources = resources or FlowResources()
        self.flows: dict[str, DAG] = {}
        self.errors: dict[str, str] = {}
        self._routes: dict[str, tuple[DAG, HttpTrigger]] = {}
        self.owners: dict[str, str] = {}  # flow name -> owning tenant; absent: shared

    def visible(self, name: str) -> bool:
        """Whether the current principal may see flow ``name`` (shared, or its tenant's)."""
        return name in self.flows and (name not in self.owners or can_see(self.owners[name]))

    async def add(self, dag: DAG, *, check: bool = True, owner: str | None = None) -> DAG:
        """Register a flow: validate it, check what it needs against the environment, mount triggers.
        ``owner``: the tenant it belongs to (only that tenant and admins see it); None: shared."""
        dag.validate()
        if dag.name in self.flows and self.flows[dag.name] is not dag:
            other = self.flows[dag.name].source_file or "code"
            raise FlowLoadError(f"flow {dag.name!r} is already loaded (from {other})")
        if dag.resources is None:
            dag.bind(self.resources)
        if check:
            await self.resources.check(dag)
        triggers = [t for t in dag.triggers if isinstance(t, HttpTrigger)]
        for t in triggers:
            if t.endpoint in self._routes and self._routes[t.endpoint][0] is not dag:
                raise FlowLoadError(
                    f"flow {dag.name!r}: endpoint {t.endpoint} is already used by flow "
                    f"{self._routes[t.endpoint][0].name!r}"
                )
        if triggers:
            dag.end_node()  # an HTTP flow must have one answer
        for t in triggers:
            self._routes[t.endpoint] = (dag, t)
        self.flows[dag.name] = dag
        if owner is not None:
            self.owners[dag.name] = owner
        return dag

    async def load_file(self, path: Path, *, check: bool = True) -> list[DAG]:
        dags = read_flow_file(path, self.resources)
        for d in dags:
            d.bind(self.resources)
            try:
                await self.add(d, check=check)
            except DataPilotError as e:
                raise FlowLoadError(e.message if path.name in e.message else f"{path.name}: {e.message}") from e
        return dags

    async def load_dir(self, folder: Path, *, check: bool = True) -> list[DAG]:
        """Load every flow file in ``folder`` (sorted); failures go to ``errors`` and the log."""
        loaded: list[DAG] = []
        files = flow_files(folder)
        if files is None:
            self.errors[str(folder)] = f"flows folder {folder} does not exist"
            log.warning("flows folder %s does not exist", folder)
            return loaded
        for path in files:
            try:
                loaded.extend(await self.load_file(path, check=check))
                self.errors.pop(str(path), None)
            except FlowLoadError as e:
                self.errors[str(path)] = e.message
                log.error("flow not loaded: %s", e.message)
        return loaded

    def get(self, name: str) -> DAG:
        """The flow ``name``; another tenant's is answered as missing, and the error lists only the
        flows the caller may see."""
        if not self.visible(name):
            known = ", ".join(n for n in sorted(self.flows) if self.visible(n)) or "none"
            raise FlowNotFoundError(f"no flow named {name!r}; loaded flows: {known}")
        return self.flows[name]

    def route(self, endpoint: str, method: str) -> tuple[DAG, HttpTrigger]:
        key = "/" + endpoint.strip("/")
        found = self._routes.get(key)
        if found is None or not self.visible(found[0].name):
            known = ", ".join(e for e, (d, _) in sorted(self._routes.items()) if self.visible(d.name)) or "none"
            raise FlowNotFoundError(f"no flow is triggered at {key}; endpoints: {known}")
        if method.upper() not in found[1].methods:
            raise MethodNotAllowedError(f"{key} accepts {', '.join(found[1].methods)}, not {method.upper()}")
        return found

    def info(self, name: str) -> FlowInfo:
        dag = self.get(name)
        return FlowInfo(
            dag.name, dag.description, dag.source_file, len(dag.nodes), _trigger_info(dag), self.owners.get(name)
        )

    def list(self) -> list[FlowInfo]:
        """The flows the caller may see: the shared ones and its tenant's (an admin: all)."""
        return [self.info(n) for n in sorted(self.flows) if self.visible(n)]

    async def run(self, name: str, data: Any = None) -> Any:
        return await self.get(name).run(data)
