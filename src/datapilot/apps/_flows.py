"""Every chat scene is an AWEL flow, served by one ``SceneService``.

The built-in scenes are written with ``>>`` below, from the modules' operators and the scenes' own;
``datapilot flow show scene:data --format dsl`` prints one, and a changed copy is served as a new
scene (``datapilot flow serve FILE --as-scene NAME``, ``POST /api/chat/scenes``). The CLI and the
server call the same ``SceneService``: a scene's events stream as its operators emit them.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapilot.apps._agent import AgentRunOperator
from datapilot.apps._scenes import (
    AnswerOperator,
    ChatAnswerOperator,
    ChatContext,
    DescribeOperator,
    LoadFileOperator,
    PlanOperator,
    PresentOperator,
    RunAnalysesOperator,
    SceneRequest,
    SceneRequestOperator,
    SchemaAnswerOperator,
    SummariseOperator,
)
from datapilot.awel import DAG, OPERATORS, NodeError, compile_dsl, to_dsl
from datapilot.core.errors import ConfigError, ConflictError, DataPilotError, InvalidRequestError
from datapilot.core.events import DoneEvent, Event
from datapilot.core.registry import Registry
from datapilot.core.tenancy import DEFAULT_TENANT, can_see, owner_of_new
from datapilot.datasource import ConnectOperator
from datapilot.text2sql import GenerateOperator, GroundOperator, LinkOperator, PromptOperator, VoteOperator

log = logging.getLogger("datapilot.apps")

SCENE_FORMATS = ("json", "dsl")


@dataclass(slots=True)
class Scene:
    """A chat scene: its flow, what it is for, and where it came from (``builtin`` or a file)."""

    name: str
    flow: DAG
    description: str = ""
    origin: str = "builtin"
    owner: str | None = None  # the tenant a user's scene belongs to; None: shared (built-ins, plugins)

    @property
    def needs(self) -> frozenset[str]:
        """The parts of a server the scene's operators use (``data``, ``knowledge``, ``agents``)."""
        return frozenset(part for op in self.flow.nodes.values() for part in _NEEDS.get(op.kind, ()))

    @property
    def inputs(self) -> list[str]:
        """The request fields the scene reads besides the question (what a client should offer)."""
        kinds = {op.kind for op in self.flow.nodes.values()}
        return [field for field, users in _INPUTS.items() if kinds & users]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "origin": self.origin,
            "owner": self.owner,
            "nodes": [op.name for op in self.flow.nodes.values()],
            "needs": sorted(self.needs),
            "inputs": self.inputs,
        }


# Which server parts and request fields the operators use: what a scene built from them needs.
_NEEDS: dict[str, tuple[str, ...]] = {
    "datasource_connect": ("data",),
    "rag_retrieve": ("knowledge",),
    "agent_run": ("data", "agents"),
}
_INPUTS: dict[str, set[str]] = {
    "datasource": {"datasource_connect", "agent_run"},
    "file": {"excel_load"},
    "space": {"rag_retrieve", "agent_run"},
    "style": {"text2sql_ground"},
}


# Plugins add scenes through the ``datapilot.scenes`` entry-point group (a ``Scene``, or a module that
# calls ``register_scene`` on import), exactly as the built-ins register.
SCENES: Registry[Scene] = Registry(
    "chat scene", entry_point_group="datapilot.scenes", error=lambda m: InvalidRequestError(m, param="scene")
)


def _text2sql(dag_name: str, description: str, *, excel: bool = False) -> DAG:
    """question -> data source -> (excel: columns) -> the text-to-SQL stages -> table, chart, answer."""
    with DAG(f"scene:{dag_name}", description) as dag:
        start = SceneRequestOperator()
        if excel:
            head = start >> LoadFileOperator() >> ConnectOperator() >> DescribeOperator()
        else:
            head = start >> ConnectOperator(answer_errors=True)
        (
            head
            >> GroundOperator()
            >> LinkOperator()
            >> PromptOperator()
            >> GenerateOperator()
            >> VoteOperator()
            >> PresentOperator()
            >> SummariseOperator()
            >> AnswerOperator()
        )
    return dag


def _db_qa() -> DAG:
    with DAG("scene:db_qa", "questions about the schema, answered from the introspected tables") as dag:
        SceneRequestOperator() >> ConnectOperator() >> SchemaAnswerOperator()
    return dag


def _dashboard() -> DAG:
    with DAG("scene:dashboard", "one request, several analyses (title, SQL, chart each)") as dag:
        SceneRequestOperator() >> ConnectOperator() >> PlanOperator() >> RunAnalysesOperator()
    return dag


def _chat() -> DAG:
    with DAG("scene:chat", "a plain conversation with the model") as dag:
        SceneRequestOperator() >> ChatAnswerOperator()
    return dag


def _knowledge() -> DAG:
    with DAG("scene:knowledge", "an answer from a knowledge space, with citations") as dag:
        (
            SceneRequestOperator()
            >> OPERATORS.get("rag_retrieve")()
            >> OPERATORS.get("rag_answer")()
            >> OPERATORS.get("rag_cite")()
        )
    return dag


def _agent() -> DAG:
    with DAG("scene:agent", "a team of agents: plan, SQL, charts, report") as dag:
        SceneRequestOperator() >> AgentRunOperator()
    return dag


BUILTIN_SCENES: dict[str, tuple[str, Callable[[], DAG]]] = {
    "data": (
        "a question over a database: SQL, a table, a chart and a sentence",
        lambda: _text2sql("data", "a question over a database: SQL, a table, a chart and a sentence"),
    ),
    "excel": (
        "a CSV / Excel / Parquet file in DuckDB, its columns described, then the question answered",
        lambda: _text2sql("excel", "a spreadsheet loaded into DuckDB, then the question answered", excel=True),
    ),
    "db_qa": ("questions about the schema and metadata", _db_qa),
    "dashboard": ("several analyses at once, each with its chart", _dashboard),
    "chat": ("a plain conversation with the model", _chat),
    "knowledge": ("an answer from a knowledge space, with citations", _knowledge),
    "agent": ("a team of agents over the data source: plan, SQL, charts, report", _agent),
}


def register_scene(
    name: str,
    flow: DAG,
    description: str = "",
    *,
    origin: str = "builtin",
    replace: bool = False,
    registry: Registry[Scene] | None = None,
    owner: str | None = None,
) -> Scene:
    """Serve ``flow`` as the chat scene ``name`` (its input is a ``SceneRequest``, its events are the
    stream; the operator that ends it emits ``done``): in every scene service of the process (``SCENES``,
    where built-ins and plugins go), or in one service's own ``registry``."""
    if not name.isidentifier():
        raise InvalidRequestError(f"a scene name is a plain identifier, not {name!r}", param="name")
    flow.validate()
    scene = Scene(name, flow, description or flow.description, origin, owner)
    return (registry if registry is not None else SCENES).register(name, scene, replace=replace)


def _register_builtins() -> None:
    for name, (description, build) in BUILTIN_SCENES.items():
        if name not in SCENES:
            register_scene(name, build(), description)


def read_scene_file(path: Path) -> DAG:
    """A flow file (``.json`` or ``.dsl``) as a scene's flow; names resolve only through the registries."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return DAG.from_json(text)
    if path.suffix == ".dsl":
        flows = compile_dsl(text)
        if len(flows) != 1:
            raise InvalidRequestError(f"{path} holds {len(flows)} workflows; a scene is one", param="file")
        return flows[0]
    raise InvalidRequestError(f"a scene file is .json or .dsl, not {path.suffix or 'no suffix'}", param="file")


def scene_text(flow: DAG, fmt: str) -> str:
    if fmt == "json":
        return flow.to_json()
    if fmt == "dsl":
        return to_dsl(flow)
    raise InvalidRequestError(f"format is one of {', '.join(SCENE_FORMATS)}, not {fmt!r}", param="format")


class SceneService:
    """Runs chat scenes as flows. ``folder`` (``DATAPILOT_HOME/scenes``) holds the users' own scenes:
    loaded at start, and where ``save`` writes a new one.

    The built-in and plugins' scenes are the product's chat modes: every tenant sees and runs them. A
    user's scene belongs to the tenant that saved it (``OWNERS_FILE`` in the folder keeps who; a file
    it does not name, saved before tenants existed or put there by hand, is the default tenant's):
    other tenants are answered as if it did not exist, and may not take its name."""

    OWNERS_FILE = ".owners"

    def __init__(self, folder: Path | None = None) -> None:
        _register_builtins()
        self.folder = folder
        # This service's own scenes (its folder, the API): another service (a server with another home)
        # never sees them. The built-ins and plugins' scenes are the process's (``SCENES``).
        self.own: Registry[Scene] = Registry("chat scene", error=SCENES.error)
        self.owners: dict[str, str] = self._read_owners()

    def _read_owners(self) -> dict[str, str]:
        path = self.folder / self.OWNERS_FILE if self.folder is not None else None
        if path is None or not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Unreadable: every saved scene falls back to the default tenant (none is shown to others).
            log.error("scene owners file %s does not load (%s): user scenes are the default tenant's", path, exc)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write_owners(self) -> None:
        if self.folder is None:
            return
        path = self.folder / self.OWNERS_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.owners, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)

    def _owner(self, name: str) -> str:
        return self.owners.get(name, DEFAULT_TENANT)

    def _visible(self, name: str) -> bool:
        return name in SCENES or (name in self.own and can_see(self._owner(name)))

    def load_folder(self) -> list[str]:
        """Register the scenes saved in ``folder``; a file that does not load is logged and skipped."""
        loaded: list[str] = []
        if self.folder is None or not self.folder.is_dir():
            return loaded
        for path in sorted([*self.folder.glob("*.json"), *self.folder.glob("*.dsl")]):
            try:
                if path.stem in BUILTIN_SCENES:
                    raise InvalidRequestError(f"{path.stem!r} is a built-in scene's name", param="name")
                register_scene(
                    path.stem,
                    read_scene_file(path),
                    origin=str(path),
                    replace=True,
                    registry=self.own,
                    owner=self._owner(path.stem),
                )
            except DataPilotError as exc:
                log.error("scene file %s does not load: %s", path, exc.message)
                continue
            loaded.append(path.stem)
        return loaded

    def save(self, name: str, text: str, fmt: str = "json", *, replace: bool = False) -> Scene:
        """Check ``text`` compiles to a flow, serve it as scene ``name`` and keep it in ``folder``. A new
        scene belongs to the tenant saving it; a replaced one keeps its owner."""
        if fmt not in SCENE_FORMATS:
            raise InvalidRequestError(f"format is one of {', '.join(SCENE_FORMATS)}, not {fmt!r}", param="format")
        if name in BUILTIN_SCENES:
            raise InvalidRequestError(f"{name!r} is a built-in scene: save the copy under another name", param="name")
        if name in self.own and not self._visible(name):
            raise ConflictError(f"the scene name {name!r} is taken: choose another name", param="name")
        if (name in self.own or name in SCENES) and not replace:
            raise InvalidRequestError(f"scene {name!r} exists: pass replace to change it", param="name")
        owner = self._owner(name) if name in self.own else owner_of_new()
        try:
            flow = DAG.from_json(text) if fmt == "json" else _one_flow(text)
            flow.validate()
        except ConfigError as exc:  # a flow that does not compile is the request's fault here
            raise InvalidRequestError(f"the flow does not compile: {exc.message}", param="flow") from None
        origin = "api"
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{name}.{fmt}"
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            origin = str(path)
        scene = register_scene(name, flow, origin=origin, replace=True, registry=self.own, owner=owner)
        if self.owners.get(name) != owner:
            self.owners[name] = owner
            self._write_owners()
        return scene

    def names(self) -> list[str]:
        """The scenes the caller may run: the shared ones and its tenant's (an admin: all)."""
        return sorted(n for n in {*SCENES.names(), *self.own.names()} if self._visible(n))

    def scenes(self) -> list[Scene]:
        return [self.get(n) for n in self.names()]

    def find(self, name: str) -> Scene | None:
        """Scene ``name``, or None when there is none the caller may see (another tenant's included)."""
        if not self._visible(name):
            return None
        return self.own.get(name) if name in self.own else SCENES.get(name)

    def unknown(self, name: str) -> str:
        """What to say about a scene ``find`` did not give: the same for a missing and a hidden one."""
        names = self.names()
        return f"unknown chat scene {name!r}{_close(name, names)}; registered: {', '.join(names)}"

    def get(self, name: str) -> Scene:
        scene = self.find(name)
        if scene is None:
            raise SCENES.error(self.unknown(name))
        return scene

    def events(self, name: str, ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
        """The scene's events as its operators emit them. An unknown scene or an empty question is an
        error here, before anything streams (a 400, not an event)."""
        scene = self.get(name)
        if not request.question or not request.question.strip():
            raise InvalidRequestError("the question is empty", param="question")
        return _run(scene.flow, ctx, request)

    async def answer(self, name: str, ctx: ChatContext, request: SceneRequest) -> dict[str, Any]:
        """Run a scene to the end and return its final answer (the ``done`` event's body)."""
        final: dict[str, Any] = {}
        async for event in self.events(name, ctx, request):
            if isinstance(event, DoneEvent):
                # A scene's answer is an object; the knowledge chat's done event carries it whole.
                # An agent run's done event carries the whole run as its ``result``.
                result = getattr(event, "result", None)
                if isinstance(result, dict):
                    final = result
                else:
                    final = event.answer if isinstance(event.answer, dict) else event.wire()
        return final


def _close(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_flow(text: str) -> DAG:
    flows = compile_dsl(text)
    if len(flows) != 1:
        raise InvalidRequestError(f"the text holds {len(flows)} workflows; a scene is one", param="flow")
    return flows[0]


async def _run(flow: DAG, ctx: ChatContext, request: SceneRequest) -> AsyncIterator[Event]:
    try:
        async for event in flow.run_events(request, resources=ctx):
            yield event
    except NodeError as exc:
        # A module's own error (an unknown source, a refused query) keeps its type, status and code.
        if isinstance(exc.__cause__, DataPilotError):
            raise exc.__cause__ from None
        raise


_SERVICE: SceneService | None = None


def scene_service() -> SceneService:
    """The process's scene service over the built-in scenes (the server and the CLI make their own
    with a scenes folder)."""
    global _SERVICE
    if _SERVICE is None:
        _SERVICE = SceneService()
    return _SERVICE


def scene_names() -> list[str]:
    return scene_service().names()


def run_scene(name: str, ctx: ChatContext, request: SceneRequest) -> AsyncIterator[dict[str, Any]]:
    """The scene's events as plain JSON objects (what the SSE stream carries); an unknown scene or an
    empty question raises here, before the first event."""
    return _wire(scene_service().events(name, ctx, request))


async def _wire(events: AsyncIterator[Event]) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        yield event.wire()


async def chat(name: str, ctx: ChatContext, request: SceneRequest) -> dict[str, Any]:
    """Run a scene to the end and return its final answer (the ``done`` event's body)."""
    return await scene_service().answer(name, ctx, request)
