"""Options and helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from datapilot.core.config import Settings, load_settings
from datapilot.core.errors import DataPilotError

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file [default: ./datapilot.toml]")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="profile in the config file")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="data folder [default: ~/.datapilot]")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="a running server's API base, e.g. http://127.0.0.1:5670/v1")]
ServerOpt = Annotated[str | None, typer.Option("--url", help="a running DataPilot server, e.g. http://127.0.0.1:5670")]


def settings_from(config: Path | None, profile: str | None, home: Path | None = None, **server: Any) -> Settings:
    settings = load_settings(config, profile, home=home)
    for key, value in server.items():
        if value is not None:
            setattr(settings.server, key, value)
    return settings


def bind(host: str, port: int) -> socket.socket:
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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


async def sse_events(
    url: str, key: str | None, path: str, body: dict[str, Any], read_timeout_s: float | None = 600
) -> AsyncIterator[dict[str, Any]]:
    """POST ``body`` (streamed) to a running server's ``path`` and yield its SSE events until ``[DONE]``.
    ``url`` may name the server or its ``/v1`` base; an API error becomes a ``DataPilotError``."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    base = url.rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient(timeout=read_timeout_s) as client:
        try:
            async with client.stream("POST", f"{base}{path}", json={**body, "stream": True}, headers=headers) as resp:
                if resp.status_code >= 400:
                    payload = json.loads(await resp.aread())
                    raise DataPilotError(payload.get("error", {}).get("message", f"HTTP {resp.status_code}"))
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        break
                    yield json.loads(data)
        except httpx.HTTPError as exc:
            raise DataPilotError(f"no server answering at {base} ({exc})") from None
