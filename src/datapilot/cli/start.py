"""``datapilot start``: the all-in-one server, or one SMMF role per process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from fastapi import FastAPI

from datapilot import __version__
from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, bind, err, settings_from, setup_logging
from datapilot.cli._progress import model_progress
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError
from datapilot.models.manager import LoadProgress, ModelManager

if TYPE_CHECKING:
    pass

start_app = typer.Typer(
    help="Start DataPilot: all in one process (default), or the controller, a worker or the API server.",
    invoke_without_command=True,
)

HostOpt = Annotated[str | None, typer.Option(help="address to listen on [default: 127.0.0.1]")]
LogOpt = Annotated[str | None, typer.Option(help="debug, info, warning, error")]
ControllerOpt = Annotated[
    str | None, typer.Option("--controller", help="controller URL [default: http://127.0.0.1:8000]")
]


def _serve(settings: Settings, app: FastAPI, sock: socket.socket, what: str) -> None:
    """Run uvicorn on a socket bound beforehand (so a busy port is reported before models load)."""
    import uvicorn

    host, bound = sock.getsockname()[:2]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            log_level=settings.server.log_level,
            access_log=settings.server.access_log,
            timeout_graceful_shutdown=5,
            # Longer than the clients' keep-alive (ours keep idle connections 30 s), so a client never
            # reuses a connection this server is closing.
            timeout_keep_alive=75,
        )
    )
    err.print(f"DataPilot {__version__} {what} on [bold]http://{host}:{bound}[/]")
    server.run(sockets=[sock])  # uvicorn picks the fastest loop installed (uvloop)


def _label(name: str, copy: int) -> str:
    return name if copy == 0 else f"{name}#{copy}"


def _load(managers: list[ModelManager]) -> None:
    """Load every in-process worker's models under one progress display (copy i labelled name#i)."""
    from datapilot.models.manager import ModelState

    async def run() -> None:
        labels = [_label(name, i) for i, m in enumerate(managers) for name in m.workers]
        with model_progress(err, labels) as progress:

            def for_copy(i: int) -> LoadProgress:
                return lambda name, step, done, total: progress(_label(name, i), step, done, total)

            await asyncio.gather(*(m.start(for_copy(i)) for i, m in enumerate(managers)))

    asyncio.run(run())
    for m in managers:
        for w in m.workers.values():
            if w.state is ModelState.FAILED:
                err.print(f"[yellow]warning:[/] model {w.name} failed to load: {w.error}")


def _role_settings(
    config: Path | None,
    profile: str | None,
    home: Path | None,
    host: str | None,
    log_level: str | None,
    controller_url: str | None = None,
) -> Settings:
    settings = settings_from(config, profile, home, host=host, log_level=log_level)
    if controller_url:
        settings.cluster.controller_url = controller_url
    setup_logging(settings.server.log_level)
    return settings


@start_app.callback()
def start(
    ctx: typer.Context,
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [default: 5670]")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
    log_level: LogOpt = None,
    runtime: Annotated[
        str | None, typer.Option(help="local (this machine's processes) or ray [default: the config's, local]")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 [default: start a local Ray]"),
    ] = None,
) -> None:
    """Start the all-in-one server: every configured model behind the OpenAI-compatible API.

    The controller, the workers (one per model instance) and the API server run in this process,
    through the same calls the separate roles make; external workers may register with it too.
    With --runtime ray, each model instance is a Ray actor that Ray places on a node of its cluster.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config, "profile": profile, "home": home}
        return
    from datapilot.server.roles import all_in_one_app, definition_store, local_managers, ray_app

    settings = settings_from(config, profile, home, host=host, port=port, log_level=log_level)
    if runtime is not None:
        if runtime not in ("local", "ray"):
            raise DataPilotError(f"--runtime must be local or ray, not {runtime!r}")
        settings.runtime = "ray" if runtime == "ray" else "local"
    if ray_address is not None:
        settings.ray.address = ray_address
        settings.runtime = "ray"
    setup_logging(settings.server.log_level)
    sock = bind(settings.server.host, settings.server.port)
    store = definition_store(settings)
    if settings.runtime == "ray":
        where = settings.ray.address or "a local Ray"
        err.print(f"placing model instances as Ray actors on {where} (start-up waits until each has loaded)")
        _serve(settings, ray_app(settings, store), sock, "serving /v1 (Ray runtime)")
        return
    managers = local_managers(settings, store)
    _load(list(managers.values()))
    _serve(settings, all_in_one_app(settings, managers, store), sock, "serving /v1")


@start_app.command()
def controller(
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="port [default: 8000]")] = None,
    no_persist: Annotated[bool, typer.Option("--no-persist", help="keep the registry in memory only")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Run the controller: the registry of model instances that workers join."""
    from datapilot.server.roles import controller_app

    settings = _role_settings(config, profile, home, host, log_level)
    sock = bind(settings.server.host, settings.cluster.controller_port if port is None else port)
    _serve(settings, controller_app(settings, persist=not no_persist), sock, "controller")


@start_app.command()
def worker(
    model: Annotated[list[str], typer.Option("--model", "-m", help="model(s) to host, by configured name")],
    controller_url: ControllerOpt = None,
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="port [default: 8001]")] = None,
    advertise_url: Annotated[
        str | None, typer.Option(help="URL the API server uses to reach this worker [default: http://HOST:PORT/v1]")
    ] = None,
    worker_id: Annotated[str | None, typer.Option(help="stable id [default: random]")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Run a worker: load models, serve them, and register them with the controller."""
    from datapilot.server.roles import all_models, definition_store, worker_app

    settings = _role_settings(config, profile, home, host, log_level, controller_url)
    store = definition_store(settings)
    defined = {m.name: m for m in all_models(settings, store)}
    missing = [m for m in model if m not in defined]
    if missing:
        raise DataPilotError(f"model(s) not defined: {', '.join(missing)} (defined: {', '.join(defined)})")
    sock = bind(settings.server.host, settings.cluster.worker_port if port is None else port)
    manager = ModelManager([defined[m] for m in model], settings.home)
    _load([manager])
    url = advertise_url or f"http://{settings.server.host}:{sock.getsockname()[1]}/v1"
    app = worker_app(settings, manager, url, store, worker_id)
    _serve(settings, app, sock, f"worker ({', '.join(model)})")


@start_app.command()
def apiserver(
    controller_url: ControllerOpt = None,
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="port [default: 8100]")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Run the API server: one OpenAI-compatible API over every worker the controller knows."""
    from datapilot.server.roles import apiserver_app

    settings = _role_settings(config, profile, home, host, log_level, controller_url)
    sock = bind(settings.server.host, settings.cluster.apiserver_port if port is None else port)
    _serve(settings, apiserver_app(settings), sock, "API server /v1")
