"""Connecting to Ray, once per process, and reading its errors."""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType
from typing import Any

from datapilot.core.errors import ConfigError, DataPilotError, ModelNotReadyError

log = logging.getLogger("datapilot.runtime")

_lock = threading.Lock()
_address: str | None = None


def ray_module() -> ModuleType:
    """``ray``, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dev dependency, so installed where tests run
        raise ConfigError("the Ray runtime needs Ray: pip install 'datapilot[ray]'") from exc
    return ray


def connected() -> bool:
    ray = ray_module()
    return bool(ray.is_initialized())


def connect(address: str | None = None, namespace: str = "datapilot", num_cpus: int | None = None) -> dict[str, Any]:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port`` or ``ray://host:port``), or start a
    local one when it is None. Idempotent within a process; returns what Ray says about the cluster."""
    global _address
    ray = ray_module()
    with _lock:
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": False, "include_dashboard": False}
            if address is None:
                kwargs["num_cpus"] = num_cpus
                # A local Ray for this server: its workers must import DataPilot as this process does.
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_python_path())}}
            if address is not None and address.startswith("ray://"):
                kwargs.pop("include_dashboard")
            try:
                # "local": a new Ray for this process, even where another cluster runs on the machine
                # (None would join the one /tmp/ray/ray_current_cluster or RAY_ADDRESS names).
                ray.init(address=address if address is not None else "local", **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = address or "a new local Ray"
                raise ConfigError(
                    f"could not connect to Ray at {where}: {exc}; start a cluster with `ray start --head` "
                    "and pass its address (--ray-address auto, host:6379 or ray://host:10001)"
                ) from exc
            _address = address
            log.info("connected to Ray (%s)", address or "local")
        elif address is not None and _address is not None and address != _address:
            raise ConfigError(f"this process is already connected to Ray at {_address}, not {address}")
    return {"address": _address, "nodes": len([n for n in ray.nodes() if n.get("Alive")])}


def _python_path() -> list[str]:
    import datapilot

    src = os.path.dirname(os.path.dirname(os.path.abspath(datapilot.__file__)))
    extra = os.environ.get("PYTHONPATH", "")
    return [src, *(p for p in extra.split(os.pathsep) if p)]


def unwrap_ray_error(exc: BaseException, what: str) -> BaseException:
    """The error to raise for a failed Ray call: a DataPilot error raised remotely keeps its type (a bad
    request stays a 400); an actor or node that died is an instance failure, so the router fails over."""
    ray = ray_module()
    errors = ray.exceptions
    if isinstance(exc, errors.RayTaskError):
        cause = exc.cause if hasattr(exc, "cause") else None
        if isinstance(cause, BaseException):
            return cause
        return DataPilotError(f"{what} failed in Ray: {exc}")
    if isinstance(exc, errors.RayActorError | errors.ActorUnavailableError | errors.WorkerCrashedError):
        return ModelNotReadyError(f"{what} is down ({type(exc).__name__}); Ray restarts it per its restart policy")
    if isinstance(exc, errors.GetTimeoutError):
        return ModelNotReadyError(f"{what} did not answer in time")
    if isinstance(exc, errors.RayError):
        return DataPilotError(f"{what} failed in Ray: {exc}")
    return exc
