"""The controller's registry of model instances, with heartbeats, expiry and optional persistence.

An instance is one loaded copy of one model in one worker. Workers register instances and send
heartbeats; an instance silent for longer than the timeout leaves the routing table. The registry
can persist to SQLite so a restarted controller knows the cluster at once (instances it loads are
only routed to again once their worker's next heartbeat arrives).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(slots=True)
class InstanceInfo:
    instance_id: str
    model: str
    worker_id: str
    url: str | None = None  # the worker's OpenAI-compatible base URL; None for in-process workers
    capabilities: list[str] = field(default_factory=list)
    state: str = "ready"  # ready, loading, failed
    error: str | None = None
    registered_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    slots: int = 1  # sequences it decodes together (a batched GGUF's ``parallel``)
    node: str | None = None  # where the runtime placed it (the Ray node), when not this worker's host

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> InstanceInfo:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


class SQLiteRegistryStore:
    """Keeps the registry in one SQLite table; writes are small and rare (register, deregister)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS instances (instance_id TEXT PRIMARY KEY, data TEXT NOT NULL)")
        self._lock = threading.Lock()

    def load(self) -> list[InstanceInfo]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM instances").fetchall()
        return [InstanceInfo.from_dict(json.loads(r[0])) for r in rows]

    def save(self, info: InstanceInfo) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO instances (instance_id, data) VALUES (?, ?)",
                (info.instance_id, json.dumps(info.to_dict())),
            )

    def delete(self, instance_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))

    def close(self) -> None:
        self._db.close()


class Registry:
    """Thread-safe map of instances; ``version`` changes whenever the routing table does."""

    def __init__(self, heartbeat_timeout: float = 10.0, store: SQLiteRegistryStore | None = None) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self._store = store
        self._lock = threading.Lock()
        self._instances: dict[str, InstanceInfo] = {}
        self._silent: set[str] = set()
        self.version = 0
        if store is not None:
            now = time.time()
            for info in store.load():
                # Recovered, but unproven until the worker's next heartbeat: not routable yet.
                info.last_heartbeat = now - heartbeat_timeout - 1
                self._instances[info.instance_id] = info

    def register(self, info: InstanceInfo) -> None:
        info.last_heartbeat = time.time()
        with self._lock:
            self._instances[info.instance_id] = info
            self.version += 1
        if self._store is not None:
            self._store.save(info)

    def heartbeat(self, instance_ids: list[str], states: dict[str, tuple[str, str | None]] | None = None) -> list[str]:
        """Refresh instances; returns the ids this registry does not know (the worker re-registers them)."""
        now = time.time()
        unknown = []
        with self._lock:
            for iid in instance_ids:
                info = self._instances.get(iid)
                if info is None:
                    unknown.append(iid)
                    continue
                was_live = self._live(info, now)
                info.last_heartbeat = now
                new_state = (states or {}).get(iid)
                if new_state is not None and (info.state, info.error) != new_state:
                    info.state, info.error = new_state
                    self.version += 1
                elif not was_live:
                    self.version += 1
        return unknown

    def deregister(self, instance_ids: list[str]) -> None:
        with self._lock:
            removed = [iid for iid in instance_ids if self._instances.pop(iid, None) is not None]
            if removed:
                self.version += 1
        if self._store is not None:
            for iid in removed:
                self._store.delete(iid)

    def _live(self, info: InstanceInfo, now: float) -> bool:
        return now - info.last_heartbeat <= self.heartbeat_timeout

    def expire(self) -> list[str]:
        """Bump the version for instances that just went silent; they stay listed, as not live."""
        now = time.time()
        with self._lock:
            silent = {i.instance_id for i in self._instances.values() if not self._live(i, now)}
            newly = sorted(silent - self._silent)
            self._silent = silent
            if newly:
                self.version += 1
        return newly

    def live(self) -> list[InstanceInfo]:
        now = time.time()
        with self._lock:
            return [InstanceInfo(**asdict(i)) for i in self._instances.values() if self._live(i, now)]

    def all(self) -> list[tuple[InstanceInfo, bool]]:
        now = time.time()
        with self._lock:
            return [(InstanceInfo(**asdict(i)), self._live(i, now)) for i in self._instances.values()]
