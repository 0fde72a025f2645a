"""Test seams shipped with the package: start a real DataPilot server in a subprocess on a free port.

Used by the test suite and the benchmarks; useful to anyone testing code against DataPilot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Run ``datapilot start [ROLE ...]`` with ``config`` (and ``env`` added to this process's
    environment) and wait until ``/health`` answers."""
    port = free_port()
    log = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
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


# --- Ray in this process ----------------------------------------------------------------------------------


@contextmanager
def private_local_ray(num_cpus: int = 2) -> Iterator[str]:
    """A one-node Ray of its own for this process (``ray start --head`` in a process group of its own,
    which its exit stops whole), joined with ``ray.init``; yields its GCS address for other processes.
    Not an in-process ``ray.init()`` start: when that times out (a raylet slow to register on a busy
    machine) it leaves its child processes behind in this process. A Ray this process already runs is
    used as it is, and left running."""
    import tempfile

    import ray

    from datapilot.runtime import connect

    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    with tempfile.TemporaryDirectory(prefix="dpray") as tmp:
        cluster = start_ray_cluster(Path(tmp), nodes=1, cpus_per_node=num_cpus)
        saved = {k: os.environ.get(k) for k in (*cluster.env, "RAY_ADDRESS")}
        os.environ.update(cluster.env)  # this process and the ones it starts join it the same way
        os.environ.pop("RAY_ADDRESS", None)
        try:
            connect(cluster.address)
            yield cluster.address
        finally:
            ray.shutdown()
            cluster.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# --- a local Ray cluster of several nodes -----------------------------------------------------------------


@dataclass
class RayCluster:
    address: str  # the head's GCS address, HOST:PORT
    nodes: list[subprocess.Popen[bytes]]
    env: dict[str, str]  # what a process joining it needs in its environment

    def stop(self) -> None:
        """Stop this cluster's nodes (not ``ray stop``, which would stop every Ray on the machine): each
        node's processes (its raylet, the head's GCS, their workers) share the node's process group."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in reversed(self.nodes):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 10
            for proc in self.nodes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))


def start_ray_cluster(workdir: Path, nodes: int = 2, cpus_per_node: int = 2, timeout: float = 90.0) -> RayCluster:
    """A head and ``nodes - 1`` more nodes joined to it, each its own raylet on 127.0.0.1 (the "machines"
    of a Ray cluster, on one host). Node ``i`` carries the custom resource ``node_i``, so work can be
    pinned to a node."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    # A cluster of this host's loopback only: no token (a token file in ~/.ray, written by any local
    # ray.init on this machine, would otherwise switch token auth on for some processes and not others).
    extra = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env = {**os.environ, **extra}
    procs: list[subprocess.Popen[bytes]] = []
    cluster = RayCluster(address, procs, extra)
    try:
        for i in range(nodes):
            where = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address={address}"]
            cmd = [ray_bin, "start", "--block", *where, f"--num-cpus={cpus_per_node}"]
            cmd += [f"--resources={json.dumps({f'node_{i}': 100})}", "--disable-usage-stats"]
            with (workdir / f"ray-node-{i}.log").open("wb") as sink:
                procs.append(
                    subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
                )
            _wait_for_nodes(ray_bin, address, i + 1, timeout, env)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_nodes(ray_bin: str, address: str, count: int, timeout: float, env: dict[str, str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [ray_bin, "status", f"--address={address}"], capture_output=True, text=True, env=env, timeout=60
        )
        if done.returncode == 0 and len(re.findall(r"^\s*1 node_[0-9a-f]{16,}", done.stdout, re.M)) >= count:
            return
        time.sleep(1.0)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} node(s) within {timeout}s")


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
