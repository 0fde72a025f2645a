"""Test seams shipped with the package: start a real DataPilot server in a subprocess on a free port.

Used by the test suite and the benchmarks; useful to anyone testing code against DataPilot.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: object) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def write_config(
    path: Path,
    models: list[dict[str, object]],
    server: dict[str, object] | None = None,
    **tables: dict[str, object],
) -> Path:
    """Write a ``datapilot.toml``: a ``[server]`` table, other tables (``cluster={...}``), ``[[models]]``."""
    lines = []
    for name, table in {"server": server or {}, **tables}.items():
        if table:
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for m in models:
        lines.append("[[models]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in m.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ServerProcess:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    workdir: Path,
    config: Path,
    home: Path,
    name: str = "server",
    timeout: float = 180.0,
    role: Sequence[str] = (),
) -> ServerProcess:
    """Run ``datapilot start [ROLE ...]`` with ``config`` and wait until ``/health`` answers."""
    port = free_port()
    log = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DATAPILOT_PROFILE", None)
    with log.open("wb") as sink:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datapilot",
                "start",
                *role,
                "--config",
                str(config),
                "--home",
                str(home),
                "--port",
                str(port),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return ServerProcess(url, proc, log)
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{name} did not answer within {timeout}s:\n{log.read_text()}")


# --- throwaway database servers -------------------------------------------------------------------------

_THROWAWAY_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "throwaway_db.sh"
_SERVER_BINARIES = {"postgres": "initdb", "mariadb": "mariadbd"}


def database_server_installed(kind: str) -> bool:
    """Whether the Debian packages for ``kind`` (postgres, mariadb) are installed (``scripts/install.sh --dev``)."""
    import shutil

    binary = _SERVER_BINARIES[kind]
    return shutil.which(binary) is not None or bool(list(Path("/usr/lib/postgresql").glob(f"*/bin/{binary}")))


@contextmanager
def throwaway_database(kind: str, timeout: float = 120.0) -> Iterator[str]:
    """A fresh PostgreSQL or MariaDB server on loopback, started by ``scripts/throwaway_db.sh``; yields
    its SQLAlchemy URL (database ``datapilot``) and stops it, removing its data, on exit.

    Needs a source checkout (the script lives in ``scripts/``) and the server packages installed.
    """
    if kind not in _SERVER_BINARIES:
        raise ValueError(f"unknown database server kind {kind!r}; known: {', '.join(_SERVER_BINARIES)}")
    if not _THROWAWAY_SCRIPT.is_file():
        raise RuntimeError(f"{_THROWAWAY_SCRIPT} not found: throwaway servers need a source checkout")
    out = subprocess.run(
        ["bash", str(_THROWAWAY_SCRIPT), kind, str(free_port())],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout.split()
    folder, url = out[-2], out[-1]
    try:
        yield url
    finally:
        subprocess.run(["bash", str(_THROWAWAY_SCRIPT), "stop", folder], check=False, timeout=60)
