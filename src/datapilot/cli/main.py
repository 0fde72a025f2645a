"""``datapilot``: start the server, manage and chat with models, inspect configuration."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from datapilot import __version__
from datapilot.cli._progress import model_progress
from datapilot.core.config import Settings, load_settings
from datapilot.core.errors import DataPilotError
from datapilot.core.types import Message, ModelRequest, SamplingParams

app = typer.Typer(
    help="DataPilot: talk to your own data with private LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
model_app = typer.Typer(help="List, prepare and chat with models.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file [default: ./datapilot.toml]")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="profile in the config file")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="data folder [default: ~/.datapilot]")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="a running server's API base, e.g. http://127.0.0.1:5670/v1")]


def _settings(config: Path | None, profile: str | None, home: Path | None = None, **server: Any) -> Settings:
    settings = load_settings(config, profile, home=home)
    for key, value in server.items():
        if value is not None:
            setattr(settings.server, key, value)
    return settings


def _version(value: bool) -> None:
    if value:
        out.print(f"datapilot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """DataPilot: one server for many models, a semantic cache, workflows, RAG and text-to-SQL."""


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise DataPilotError(
            f"could not listen on {host}:{port}: {exc.strerror or exc} "
            "(is another server using the port? choose another with --port)"
        ) from None
    return sock


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@app.command()
def start(
    host: Annotated[str | None, typer.Option(help="address to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [default: 5670]")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
) -> None:
    """Start the all-in-one server: every configured model behind the OpenAI-compatible API."""
    import uvicorn

    from datapilot.models.manager import ModelManager, ModelState
    from datapilot.server.app import create_app

    settings = _settings(config, profile, home, host=host, port=port, log_level=log_level)
    _setup_logging(settings.server.log_level)

    # Bind first: a busy port is reported at once, before any model is loaded.
    sock = _bind(settings.server.host, settings.server.port)

    async def run() -> None:
        manager = ModelManager(settings.models, settings.home)
        with model_progress(err, list(manager.workers)) as progress:
            await manager.start(progress)
        failed = [w for w in manager.workers.values() if w.state is ModelState.FAILED]
        for w in failed:
            err.print(f"[yellow]warning:[/] model {w.name} failed to load: {w.error}")
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, manager),
                log_config=None,
                log_level=settings.server.log_level,
                timeout_graceful_shutdown=5,
            )
        )
        host, port = sock.getsockname()[:2]
        err.print(
            f"DataPilot {__version__} serving {len(manager.workers) - len(failed)} model(s) on "
            f"[bold]http://{host}:{port}/v1[/]"
        )
        await server.serve(sockets=[sock])

    asyncio.run(run())


@model_app.command("list")
def model_list(config: ConfigOpt = None, profile: ProfileOpt = None, url: UrlOpt = None) -> None:
    """List configured models, with their live status when the server is running."""
    settings = _settings(config, profile)
    base = url or f"http://{settings.server.host}:{settings.server.port}/v1"
    live: dict[str, dict[str, Any]] = {}
    try:
        headers = {}
        if settings.server.api_keys:
            headers["Authorization"] = f"Bearer {settings.server.api_keys[0].get_secret_value()}"
        resp = httpx.get(f"{base}/models", timeout=2.0, headers=headers)
        resp.raise_for_status()
        live = {m["id"]: m for m in resp.json()["data"]}
    except httpx.HTTPError:
        err.print(f"[dim]no server answering at {base}; showing configuration only[/]")
    table = Table("model", "backend", "source", "status")
    names = [m.name for m in settings.models]
    for m in settings.models:
        source = m.path or (f"package {m.package}" if m.package else m.base_url) or "-"
        status = live.get(m.name, {}).get("status", "not running" if not live else "not served")
        table.add_row(m.name, m.backend, source, status)
    for name, served in live.items():
        if name not in names:
            table.add_row(name, served.get("backend", "?"), "(server)", served.get("status", "?"))
    out.print(table)


@model_app.command("prepare")
def model_prepare(
    names: Annotated[list[str] | None, typer.Argument(help="models to prepare [default: all]")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Assemble or locate model files (done by `start` too), showing progress."""
    from datapilot.models.assets import resolve_model_path

    settings = _settings(config, profile, home)
    chosen = [m for m in settings.models if not names or m.name in names]
    unknown = set(names or ()) - {m.name for m in chosen}
    if unknown:
        raise DataPilotError(f"unknown model(s): {', '.join(sorted(unknown))}")
    with model_progress(err, [m.name for m in chosen]) as progress:
        for m in chosen:
            path = resolve_model_path(m, settings.home, functools.partial(progress, m.name))
            progress(m.name, f"ready: {path or m.base_url}", 1, 1)


@model_app.command("chat")
def model_chat(
    model: Annotated[str, typer.Argument(help="model name")],
    url: UrlOpt = None,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    temperature: Annotated[float, typer.Option(min=0, max=2)] = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Chat with a model, streaming: through a running server (--url) or loaded in this process.

    Type /reset to start over, /exit (or Ctrl-D) to leave.
    """
    from datapilot.core.client import LLMClient

    settings = _settings(config, profile, home)

    async def run() -> None:
        client: LLMClient
        if url:
            from datapilot.models.remote import RemoteLLMClient

            key = settings.server.api_keys[0].get_secret_value() if settings.server.api_keys else None
            client = RemoteLLMClient(url, key)
        else:
            from datapilot.models.manager import ModelManager

            cfg = settings.model(model)
            if cfg is None:
                known = ", ".join(m.name for m in settings.models)
                raise DataPilotError(
                    f"model {model!r} is not configured (configured: {known}); "
                    "or pass --url to chat through a running server"
                )
            manager = ModelManager([cfg], settings.home)
            with model_progress(err, [cfg.name]) as progress:
                await manager.start(progress)
            manager.worker(model).require("chat")
            client = manager
        history: list[Message] = [Message("system", system)] if system else []
        err.print(f"[dim]chatting with {model}; /reset to start over, /exit to leave[/]")
        while True:
            try:
                line = await asyncio.to_thread(out.input, "[bold green]you>[/] ")
            except EOFError:
                break
            text = line.strip()
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                history = history[:1] if system else []
                continue
            if not text:
                continue
            history.append(Message("user", text))
            params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
            parts: list[str] = []
            out.print("[bold blue]assistant>[/] ", end="")
            stats = ""
            async for chunk in client.stream(ModelRequest(model=model, messages=history, params=params)):
                out.print(chunk.text, end="", markup=False, highlight=False)
                parts.append(chunk.text)
                if chunk.timing is not None and chunk.usage is not None:
                    t = chunk.timing
                    ttft = f"{t.ttft_s * 1000:.0f} ms" if t.ttft_s is not None else "-"
                    stats = (
                        f"{chunk.usage.completion_tokens} tokens, first token {ttft}, "
                        f"{t.tokens_per_second(chunk.usage.completion_tokens):.1f} tokens/s"
                    )
            out.print()
            if stats:
                err.print(f"[dim]{stats}[/]")
            history.append(Message("assistant", "".join(parts)))

    asyncio.run(run())


@config_app.command("show")
def config_show(config: ConfigOpt = None, profile: ProfileOpt = None, home: HomeOpt = None) -> None:
    """Print the resolved settings as JSON (secrets masked)."""
    settings = _settings(config, profile, home)
    out.print_json(json.dumps(settings.model_dump(mode="json")))


def main() -> None:
    try:
        app()  # standalone: usage errors and --help are handled (and exit) here
    except DataPilotError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("aborted")
        sys.exit(130)
