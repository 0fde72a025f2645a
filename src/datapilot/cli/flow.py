"""``datapilot flow``: list, show and run AWEL workflows from the flows folder, here or on a server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, err, out, settings_from
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError, InvalidRequestError

flow_app = typer.Typer(help="List, show and run AWEL workflows.", no_args_is_help=True)

FlowsDirOpt = Annotated[
    Path | None, typer.Option("--flows-dir", "-d", help="folder of .py/.dsl/.json flows [default: awel.flows_dir]")
]


def _folder(settings: Settings, flows_dir: Path | None) -> Path:
    folder = flows_dir or settings.awel.flows_dir
    if folder is None:
        raise DataPilotError("no flows folder: pass --flows-dir or set flows_dir under [awel] in the config")
    return folder


async def _load(folder: Path) -> Any:
    """Every flow in the folder, structurally checked but not yet bound to models."""
    from datapilot.awel import DAGManager

    manager = DAGManager()
    await manager.load_dir(folder, check=False)
    return manager


def _scenes(settings: Settings) -> Any:
    """The chat scenes: the built-in flows and the user's own (``HOME/scenes``)."""
    from datapilot.apps import SceneService

    service = SceneService(settings.home / "scenes")
    service.load_folder()
    return service


SCENE_PREFIX = "scene:"


@flow_app.command("list")
def flow_list(
    flows_dir: FlowsDirOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None, home: HomeOpt = None
) -> None:
    """List the chat scenes (each a flow: ``scene:NAME``) and the flows in the flows folder, with their
    triggers; files that fail to load are shown with why."""
    settings = settings_from(config, profile, home)
    table = Table("flow", "file", "nodes", "triggers")
    for scene in _scenes(settings).scenes():
        origin = "built-in" if scene.origin == "builtin" else Path(scene.origin).name
        table.add_row(SCENE_PREFIX + scene.name, origin, str(len(scene.flow.nodes)), "POST /api/chat")
    folder = flows_dir or settings.awel.flows_dir
    manager = asyncio.run(_load(folder)) if folder is not None else None
    for info in manager.list() if manager is not None else []:
        triggers = ", ".join(
            f"{'/'.join(t['methods'])} {t['path']}" if t["type"] == "http" else t["type"] for t in info.triggers
        )
        table.add_row(info.name, Path(info.source or "-").name, str(info.nodes), triggers or "-")
    out.print(table)
    for source, message in sorted(manager.errors.items()) if manager is not None else []:
        err.print(f"[red]not loaded:[/] {Path(source).name}: {message}", highlight=False)


@flow_app.command("show")
def flow_show(
    name: Annotated[str, typer.Argument(help="flow name, or scene:NAME for a chat scene")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, dsl, mermaid or summary")] = "summary",
    flows_dir: FlowsDirOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Print a flow as its JSON graph, DSL text, a Mermaid diagram, or a summary of nodes and edges.
    ``scene:data`` is the flow that answers ``POST /api/chat`` with scene ``data``: copy it, change it,
    and serve the copy with ``datapilot flow serve FILE --as-scene NAME``."""
    from datapilot.awel import to_dsl

    settings = settings_from(config, profile, home)
    if name.startswith(SCENE_PREFIX):
        dag = _scenes(settings).get(name.removeprefix(SCENE_PREFIX)).flow
        where = "scene"
    else:
        dag = asyncio.run(_load(_folder(settings, flows_dir))).get(name)
        where = str(dag.source_file)
    if fmt == "json":
        print(dag.to_json())
    elif fmt == "dsl":
        print(to_dsl(dag), end="")
    elif fmt == "mermaid":
        print(dag.to_mermaid())
    elif fmt == "summary":
        graph = dag.to_dict()
        table = Table("node", "type", "inputs", "output", "on error")
        for node in graph["nodes"]:
            ins = [e["source"] for e in graph["edges"] if e["target"] == node["id"]]
            policy = node.get("on_error", {}).get("action", "fail")
            table.add_row(node["id"], node["type"], ", ".join(ins) or "-", escape(node["ports"]["output"]), policy)
        out.print(f"[bold]{dag.name}[/] ({where})")
        out.print(table)
    else:
        raise InvalidRequestError(f"unknown format {fmt!r}: use json, dsl, mermaid or summary")


@flow_app.command("serve")
def flow_serve(
    file: Annotated[Path, typer.Argument(help="a flow file, .json or .dsl (e.g. a changed copy of scene:data)")],
    as_scene: Annotated[str, typer.Option("--as-scene", help="the name to serve it under as a chat scene")],
    replace: Annotated[bool, typer.Option("--replace", help="replace a scene of yours with that name")] = False,
    url: Annotated[str | None, typer.Option("--url", help="a running server to serve it on now")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve a flow as a new chat scene: checked (every operator resolves, the graph is valid), kept in
    HOME/scenes, and answered by ``POST /api/chat`` (``"scene": NAME``) and ``datapilot chat --scene``."""
    settings = settings_from(config, profile, home)
    fmt = file.suffix.removeprefix(".")
    if fmt not in ("json", "dsl"):
        raise InvalidRequestError(f"a flow file is .json or .dsl, not {file.name}", param="file")
    text = file.read_text(encoding="utf-8")
    if url:
        key = settings.server.api_keys[0].get_secret_value() if settings.server.api_keys else None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        body = {"name": as_scene, "flow": text, "format": fmt, "replace": replace}
        resp = httpx.post(f"{url.rstrip('/')}/api/chat/scenes", json=body, headers=headers, timeout=60)
        if resp.status_code >= 400:
            raise DataPilotError(
                f"the server refused the scene: {resp.json().get('error', {}).get('message', resp.text)}"
            )
        info = resp.json()
    else:
        info = _scenes(settings).save(as_scene, text, fmt, replace=replace).to_dict()
    out.print(f"scene [bold]{as_scene}[/] served: {' -> '.join(info['nodes'])}")
    err.print(f'[dim]ask it: datapilot chat --scene {as_scene} "..." or POST /api/chat {{"scene": "{as_scene}"}}[/]')


def _items(input_file: Path) -> list[Any]:
    text = input_file.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"{input_file}: not JSON or JSON lines: {e}") from None


def _print_result(result: Any) -> None:
    from datapilot.awel import to_jsonable

    value = to_jsonable(result)
    if isinstance(value, str):
        print(value)
    else:
        print(json.dumps(value, ensure_ascii=False, indent=2))


async def _run_local(settings: Settings, folder: Path, name: str, data: Any, items: list[Any] | None, concurrency: int):
    from datapilot.awel import FlowResources, run_batch
    from datapilot.cli._progress import model_progress
    from datapilot.models.manager import ModelManager

    dag = (await _load(folder)).get(name)
    needed = {r.name for r in dag.requirements() if r.kind == "model"}
    models = ModelManager([m for m in settings.models if m.name in needed], settings.home)
    if models.workers:
        with model_progress(err, list(models.workers)) as progress:
            await models.start(progress)
    sources = None
    try:
        from datapilot.retrieval import InMemoryVectorIndex

        resources = FlowResources.embedded(models, settings.awel.vector_stores, index_factory=InMemoryVectorIndex)
        if any(r.kind == "datasource" for r in dag.requirements()):  # the sql operator queries data sources
            from datapilot.datasource import DataSources

            sources = DataSources(settings.data, settings.home)
            await sources.add_sqlite_files(settings.awel.databases)
            resources.sources, resources.default_source = sources, settings.data.default_source
        dag.bind(resources)
        await resources.check(dag)
        if items is None:
            result = await dag.run(data)
            if hasattr(result, "__aiter__"):
                async for chunk in result:
                    print(chunk, end="", flush=True)
                print()
            else:
                _print_result(result)
            return
        columns = (TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err) as bar:
            task = bar.add_task("run", total=len(items))
            results = await run_batch(
                dag, items, concurrency, lambda done, total: bar.update(task, completed=done), return_exceptions=True
            )
        failed = 0
        for r in results:
            if isinstance(r, Exception):
                failed += 1
                print(json.dumps({"error": getattr(r, "message", str(r))}))
            else:
                from datapilot.awel import to_jsonable

                print(json.dumps(to_jsonable(r), ensure_ascii=False))
        if failed:
            err.print(f"[yellow]{failed} of {len(items)} item(s) failed[/]")
    finally:
        await models.close()
        if sources is not None:
            await sources.close()


@flow_app.command("run")
def flow_run(
    name: Annotated[str, typer.Argument(help="flow name")],
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="call data as JSON")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input-file", help="JSON array or JSON lines: one call per item, with a progress bar"),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="calls at a time with --input-file")] = 4,
    url: Annotated[str | None, typer.Option("--url", help="run on a server, e.g. http://127.0.0.1:5670")] = None,
    flows_dir: FlowsDirOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Run a flow once (--input), or over a file of inputs (--input-file), in this process or on a server."""
    settings = settings_from(config, profile, home)
    try:
        data = json.loads(input_json) if input_json is not None else None
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"--input is not valid JSON: {e}") from None
    items = _items(input_file) if input_file is not None else None
    if url:
        base = url.rstrip("/").removesuffix("/v1").removesuffix("/api/v1")
        headers = {}
        if settings.server.api_keys:
            headers["Authorization"] = f"Bearer {settings.server.api_keys[0].get_secret_value()}"
        with httpx.Client(timeout=600, headers=headers) as client:
            for value in items if items is not None else [data]:
                resp = client.post(f"{base}/api/v1/awel/flows/{name}/run", json={"input": value})
                body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                if resp.status_code >= 400:
                    raise DataPilotError(body.get("error", {}).get("message", resp.text))
                _print_result(body.get("result", resp.text))
        return
    asyncio.run(_run_local(settings, _folder(settings, flows_dir), name, data, items, concurrency))
