"""Model lifecycle in a process that hosts models (the all-in-one server, or a worker).

``ModelHost`` starts, stops and restarts model instances at run time and keeps model definitions
added through the API in SQLite, so they survive a restart. Each running copy of a model lives in
one in-process worker (a ``ModelManager``); starting a model that already runs everywhere adds a
worker, which is how one process serves several instances of one model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from datapilot.core.config import ModelConfig
from datapilot.core.errors import ConfigError, ConflictError, InvalidRequestError, ModelNotFoundError
from datapilot.core.secrets import SecretBox, is_encrypted
from datapilot.models.backend import check_backend
from datapilot.models.cluster.agent import WorkerAgent
from datapilot.models.manager import ModelManager, ModelState

log = logging.getLogger("datapilot.models")


class ModelLifecycle(Protocol):
    """What ``/api/models`` drives: ``ModelHost`` (local processes) or ``RayModels`` (Ray actors)."""

    def describe(self) -> list[dict[str, object]]: ...

    async def define(self, config: ModelConfig) -> None: ...

    async def undefine(self, name: str) -> None: ...

    async def start(self, name: str) -> str: ...

    def state_of(self, worker: str, name: str) -> tuple[str, str | None]: ...

    async def stop(self, name: str, unload: bool = False) -> int: ...

    async def restart(self, name: str) -> int: ...


class DefinitionStore:
    """Model definitions added at run time, one JSON row each. An ``api_key`` is stored encrypted with
    ``secrets`` (default: the key of the folder the database is in, i.e. DATAPILOT_HOME); a row from
    before, with the key in plain text, is re-saved encrypted when it is loaded."""

    def __init__(self, path: Path, *, secrets: SecretBox | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if fresh:
            path.chmod(0o600)
        self._db.execute("CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, config TEXT NOT NULL)")
        self._lock = threading.Lock()
        self.secrets = secrets or SecretBox.at_home(path.parent)

    def load(self) -> list[ModelConfig]:
        with self._lock:
            rows = self._db.execute("SELECT name, config FROM models ORDER BY name").fetchall()
        out: list[ModelConfig] = []
        for name, text in rows:
            data = json.loads(text)
            stored = data.get("api_key")
            if isinstance(stored, str):
                data["api_key"] = self.secrets.decrypt(stored, what=f"the api_key of model {name!r}")
            config = ModelConfig.model_validate(data)
            if isinstance(stored, str) and not is_encrypted(stored):
                try:
                    self.save(config)  # stored in plain text before encryption: re-saved encrypted
                except ConfigError as e:
                    log.warning("the api_key of model %r stays in plain text: %s", name, e.message)
            out.append(config)
        return out

    def save(self, config: ModelConfig) -> None:
        data = config.model_dump(mode="json")
        if config.api_key is not None:
            data["api_key"] = self.secrets.encrypt(config.api_key.get_secret_value())
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", (config.name, json.dumps(data)))

    def delete(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM models WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()


WorkerFactory = Callable[[str, ModelManager], WorkerAgent]


class ModelDefinitions:
    """The models a host knows: configured in the file, or defined through the API (kept in a
    ``DefinitionStore``, so they survive a restart). Hosts say how instances start and stop."""

    def __init__(self, configured: list[ModelConfig], store: DefinitionStore | None) -> None:
        self.configured = {m.name: m for m in configured}
        self.store = store
        self.defined: dict[str, ModelConfig] = {m.name: m for m in (store.load() if store else [])}

    def definition(self, name: str) -> ModelConfig:
        cfg = self.defined.get(name) or self.configured.get(name)
        if cfg is None:
            known = ", ".join(sorted({*self.configured, *self.defined})) or "none"
            raise ModelNotFoundError(f"model {name!r} is not defined (defined: {known})", param="name")
        return cfg

    def names(self) -> list[str]:
        return sorted({*self.configured, *self.defined})

    async def define(self, config: ModelConfig) -> None:
        if config.name in self.configured:
            raise ConflictError(f"model {config.name!r} is defined in the config file; edit it there")
        if self.store is None:
            raise InvalidRequestError("this server keeps no model definitions")
        check_backend(config.backend)
        self.store.save(config)
        self.defined[config.name] = config

    async def undefine(self, name: str) -> None:
        if name in self.configured:
            raise InvalidRequestError(f"model {name!r} is defined in the config file; remove it there")
        self.definition(name)
        await self.stop(name, unload=True)
        if self.store is not None:
            self.store.delete(name)
        self.defined.pop(name, None)

    async def stop(self, name: str, unload: bool = False) -> int:
        raise NotImplementedError


class ModelHost(ModelDefinitions):
    def __init__(
        self,
        configured: list[ModelConfig],
        managers: dict[str, ModelManager],
        agents: dict[str, WorkerAgent],
        store: DefinitionStore | None,
        home: Path,
        new_agent: WorkerFactory | None = None,
    ) -> None:
        super().__init__(configured, store)
        self.managers = managers  # shared with the router: workers added here become routable
        self.agents = agents
        self.home = home
        self.new_agent = new_agent
        self._lock = asyncio.Lock()

    def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for name in self.names():
            cfg = self.definition(name)
            instances = [
                {"worker": wid, "state": m.workers[name].state.value, "error": m.workers[name].error}
                for wid, m in self.managers.items()
                if name in m.workers
            ]
            out.append(
                {
                    "name": name,
                    "backend": cfg.backend,
                    "source": "api" if name in self.defined else "config",
                    "instances": instances,
                }
            )
        return out

    async def start(self, name: str) -> str:
        """Start one more instance of ``name``; returns the worker it runs on."""
        cfg = self.definition(name)
        async with self._lock:
            stopped = [
                w for w, m in self.managers.items() if name in m.workers and m.workers[name].state is ModelState.STOPPED
            ]
            free = [w for w, m in self.managers.items() if name not in m.workers]
            if stopped:
                wid = stopped[0]
                worker = self.managers[wid].workers[name]
                worker.config = cfg
                await worker.start()
            else:
                if free:
                    wid = free[0]
                elif self.new_agent is not None:
                    wid = f"local-{len(self.managers)}"
                    manager = ModelManager([], self.home)
                    manager.started = True
                    self.managers[wid] = manager
                    self.agents[wid] = self.new_agent(wid, manager)
                    await self.agents[wid].start()
                else:
                    raise ConflictError(f"model {name!r} already runs on this worker")
                await self.managers[wid].add(cfg)
            await self.agents[wid].beat()
        return wid

    async def stop(self, name: str, unload: bool = False) -> int:
        """Stop every running instance of ``name`` here (``unload``: forget them too); returns how many."""
        self.definition(name)
        async with self._lock:
            count = 0
            for wid, manager in self.managers.items():
                worker = manager.workers.get(name)
                if worker is None:
                    continue
                if worker.state is not ModelState.STOPPED:
                    count += 1
                if unload:
                    await manager.remove(name)
                elif worker.state is not ModelState.STOPPED:
                    await worker.stop()
                await self.agents[wid].beat()
        return count

    def state_of(self, worker: str, name: str) -> tuple[str, str | None]:
        w = self.managers[worker].workers[name]
        return w.state.value, w.error

    async def restart(self, name: str) -> int:
        count = max(1, await self.stop(name))
        for _ in range(count):
            await self.start(name)
        return count
