"""``datapilot``: start the server, manage and chat with models, inspect configuration."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from datapilot import __version__
from datapilot.cli._common import (
    ConfigOpt,
    HomeOpt,
    ProfileOpt,
    UrlOpt,
    err,
    out,
    settings_from,
)
from datapilot.cli._progress import model_progress
from datapilot.cli.agent import agent_app
from datapilot.cli.audit import audit_app
from datapilot.cli.bench_serve import bench_serve
from datapilot.cli.cache import bench_app, cache_app
from datapilot.cli.chat import chat_command
from datapilot.cli.db import db_app
from datapilot.cli.eval import eval_app
from datapilot.cli.flow import flow_app
from datapilot.cli.keys import keys_app
from datapilot.cli.knowledge import knowledge_app
from datapilot.cli.start import start_app
from datapilot.cli.train import train_app
from datapilot.core.config import Settings
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
app.add_typer(flow_app, name="flow")
app.add_typer(cache_app, name="cache")
app.add_typer(knowledge_app, name="knowledge")
bench_app.command("serve")(bench_serve)
app.add_typer(bench_app, name="bench")
app.add_typer(start_app, name="start")
app.add_typer(db_app, name="db")
app.add_typer(eval_app, name="eval")
app.add_typer(agent_app, name="agent")
app.add_typer(train_app, name="train")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.command("chat")(chat_command)


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


@model_app.command("list")
def model_list(config: ConfigOpt = None, profile: ProfileOpt = None, url: UrlOpt = None) -> None:
    """List configured models, with their live status when the server is running."""
    settings = settings_from(config, profile)
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


def _server_base(url: str | None, settings: Settings) -> str:
    base = (url or f"http://{settings.server.host}:{settings.server.port}").rstrip("/")
    return base.removesuffix("/v1")


def _lifecycle(action: str, name: str, url: str | None, config: Path | None, profile: str | None) -> None:
    settings = settings_from(config, profile)
    base = _server_base(url, settings)
    headers = {}
    if settings.server.api_keys:
        headers["Authorization"] = f"Bearer {settings.server.api_keys[0].get_secret_value()}"
    try:
        with err.status(f"{action} {name} on {base} ..."):
            resp = httpx.post(f"{base}/api/models/{name}/{action}", headers=headers, timeout=600)
    except httpx.HTTPError as exc:
        raise DataPilotError(f"no server answering at {base} ({exc}); start one or pass --url") from None
    body = resp.json()
    if resp.status_code >= 400:
        raise DataPilotError(body.get("error", {}).get("message") or resp.text)
    out.print_json(data=body)


ServerUrlOpt = Annotated[str | None, typer.Option("--url", help="server base URL [default: the configured one]")]


@model_app.command("start")
def model_start(name: str, url: ServerUrlOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None) -> None:
    """Start one more instance of a defined model on a running server."""
    _lifecycle("start", name, url, config, profile)


@model_app.command("stop")
def model_stop(name: str, url: ServerUrlOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None) -> None:
    """Stop every instance of a model on a running server."""
    _lifecycle("stop", name, url, config, profile)


@model_app.command("restart")
def model_restart(name: str, url: ServerUrlOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None) -> None:
    """Restart a model's instances on a running server."""
    _lifecycle("restart", name, url, config, profile)


@model_app.command("prepare")
def model_prepare(
    names: Annotated[list[str] | None, typer.Argument(help="models to prepare [default: all]")] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Assemble or locate model files (done by `start` too), showing progress."""
    from datapilot.models.assets import resolve_model_path

    settings = settings_from(config, profile, home)
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

    settings = settings_from(config, profile, home)

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
    """Print the resolved settings as JSON (secrets masked: keys, tokens, passwords in URLs)."""
    from datapilot.core.secrets import mask_secrets

    settings = settings_from(config, profile, home)
    out.print_json(json.dumps(mask_secrets(settings.model_dump(mode="json"))))


def main() -> None:
    try:
        app()  # standalone: usage errors and --help are handled (and exit) here
    except DataPilotError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("aborted")
        sys.exit(130)
