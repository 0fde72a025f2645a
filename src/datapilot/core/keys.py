"""API keys that belong to tenants, and the tenants' token budgets: ``DATAPILOT_HOME/keys.db``.

A key is ``dpk_<id>_<secret>``: the id is public (listings, the audit log, revoking), the secret is
shown once, when the key is created, and only its SHA-256 is stored (the secret is 256 random bits,
so a fast hash is as safe as a slow one and keeps the check under a tenth of a millisecond). A key
carries its tenant, its access level (read, write, admin), its scopes (which models, data sources,
knowledge spaces, flows and cache scopes it may use) and its own rate limits. Revoking takes effect
on the next request, in every process that reads the same home.

Used by the server's authentication and by ``datapilot keys``; standard library only.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from datapilot.core.errors import InvalidRequestError, NotFoundError
from datapilot.core.tenancy import LEVELS, SCOPE_KINDS, Level, Principal

KEY_PREFIX = "dpk_"
_KEY_RE = re.compile(r"^dpk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    level TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '{}',
    rpm INTEGER,
    tpm INTEGER,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    daily_tokens INTEGER,
    monthly_tokens INTEGER,
    updated_at REAL NOT NULL
);
"""


def check_tenant_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidRequestError(
            f"invalid tenant name {name!r}: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            param="tenant",
        )
    return name


def clean_scopes(scopes: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Scopes as stored: only known kinds, each a tuple of names; ``*`` or a missing kind means all."""
    out: dict[str, tuple[str, ...]] = {}
    for kind, names in (scopes or {}).items():
        if kind not in SCOPE_KINDS:
            raise InvalidRequestError(
                f"unknown scope kind {kind!r}; use one of {', '.join(SCOPE_KINDS)}", param=f"scopes.{kind}"
            )
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n for n in names):
            raise InvalidRequestError(f"scopes.{kind} must be a list of names", param=f"scopes.{kind}")
        if "*" not in names:
            out[kind] = tuple(dict.fromkeys(names))
    return out


@dataclass(slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    tenant: str
    name: str
    level: Level
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rpm: int | None = None
    tpm: int | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > time.time())

    def principal(self) -> Principal:
        return Principal(self.tenant, self.level, self.id, dict(self.scopes), self.rpm, self.tpm)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "level": self.level,
            "scopes": {k: list(v) for k, v in self.scopes.items()},
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


@dataclass(slots=True)
class TenantBudget:
    tenant: str
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "daily_tokens": self.daily_tokens, "monthly_tokens": self.monthly_tokens}


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Tenants' keys and budgets in one SQLite file (created on first write; read-only use of a home
    without it finds no keys)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._any: tuple[float, bool] | None = None  # (file mtime, whether any key exists)

    @classmethod
    def for_home(cls, home: Path) -> KeyStore:
        return cls(Path(home) / "keys.db")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row of a query, the statement run to its end: a half-read SELECT would hold its
        read transaction open, and this connection would not see other processes' writes (a revoke)."""
        with self._lock:
            rows = self._db().execute(sql, args).fetchall()
        return rows[0] if rows else None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self.path.chmod(0o600)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- keys -------------------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        *,
        name: str = "",
        level: str = "write",
        scopes: Mapping[str, Any] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        expires_in_s: float | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for ``tenant``: its record and the key itself (shown once, never stored)."""
        check_tenant_name(tenant)
        if level not in LEVELS:
            raise InvalidRequestError(f"invalid level {level!r}; use one of {', '.join(LEVELS)}", param="level")
        for what, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidRequestError(f"{what} must be a positive whole number", param=what)
        if len(name) > 200:
            raise InvalidRequestError("the key's name is over 200 characters", param="name")
        key_id = secrets.token_hex(6)
        token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        record = ApiKey(
            key_id,
            tenant,
            name,
            cast(Level, level),
            clean_scopes(scopes),
            rpm,
            tpm,
            now,
            now + expires_in_s if expires_in_s else None,
        )
        with self._lock:
            self._db().execute(
                "INSERT INTO api_keys (id, hash, tenant, name, level, scopes, rpm, tpm, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    _hash(token),
                    tenant,
                    name,
                    level,
                    json.dumps({k: list(v) for k, v in record.scopes.items()}),
                    rpm,
                    tpm,
                    now,
                    record.expires_at,
                ),
            )
            self._any = None
        return record, token

    @staticmethod
    def _row(row: Sequence[Any]) -> ApiKey:
        key_id, tenant, name, level, scopes, rpm, tpm, created, expires, revoked = row
        stored = {k: tuple(v) for k, v in json.loads(scopes or "{}").items()}
        return ApiKey(key_id, tenant, name, level, stored, rpm, tpm, created, expires, revoked)

    _COLUMNS = "id, tenant, name, level, scopes, rpm, tpm, created_at, expires_at, revoked_at"

    def keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[ApiKey]:
        if not self.path.exists():
            return []
        sql = f"SELECT {self._COLUMNS} FROM api_keys"
        where, args = [], []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY created_at", args).fetchall()
        return [self._row(r) for r in rows]

    def get(self, key_id: str) -> ApiKey:
        if self.path.exists():
            row = self._one(f"SELECT {self._COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
            if row is not None:
                return self._row(row)
        raise NotFoundError(f"unknown API key {key_id!r}", param="id")

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (kept, marked revoked, for the audit log's sake); revoking twice is a no-op."""
        record = self.get(key_id)
        if record.revoked_at is None:
            with self._lock:
                record.revoked_at = time.time()
                self._db().execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (record.revoked_at, key_id))
                self._any = None
        return record

    def resolve(self, token: str) -> ApiKey | None:
        """The active key whose secret is ``token``; ``None`` for anything else."""
        match = _KEY_RE.match(token)
        if match is None or not self.path.exists():
            return None
        row = self._one(f"SELECT {self._COLUMNS}, hash FROM api_keys WHERE id = ?", (match.group(1),))
        if row is None or not secrets.compare_digest(row[-1], _hash(token)):
            return None
        record = self._row(row[:-1])
        return record if record.active else None

    def has_keys(self) -> bool:
        """Whether any key was ever created here, revoked and expired ones included: a server with keys
        never opens up again because its last key was revoked (cheap: re-read only when the file
        changed)."""
        try:
            mtime = self.path.stat().st_mtime
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists():
                mtime = max(mtime, wal.stat().st_mtime)
        except FileNotFoundError:
            return False
        if self._any is None or self._any[0] != mtime:
            row = self._one("SELECT 1 FROM api_keys LIMIT 1")
            self._any = (mtime, row is not None)
        return self._any[1]

    # --- budgets ----------------------------------------------------------------------------------

    def set_budget(self, tenant: str, *, daily_tokens: int | None, monthly_tokens: int | None) -> TenantBudget:
        """Set (or, with both ``None``, clear) a tenant's token budgets."""
        check_tenant_name(tenant)
        for what, value in (("daily_tokens", daily_tokens), ("monthly_tokens", monthly_tokens)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidRequestError(f"{what} must be a whole number of tokens, 0 or more", param=what)
        with self._lock:
            self._db().execute(
                "INSERT INTO tenants (name, daily_tokens, monthly_tokens, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET daily_tokens = excluded.daily_tokens,"
                " monthly_tokens = excluded.monthly_tokens, updated_at = excluded.updated_at",
                (tenant, daily_tokens, monthly_tokens, time.time()),
            )
        return TenantBudget(tenant, daily_tokens, monthly_tokens)

    def budget(self, tenant: str) -> TenantBudget:
        if self.path.exists():
            row = self._one("SELECT daily_tokens, monthly_tokens FROM tenants WHERE name = ?", (tenant,))
            if row is not None:
                return TenantBudget(tenant, row[0], row[1])
        return TenantBudget(tenant)

    def budgets(self) -> list[TenantBudget]:
        if not self.path.exists():
            return []
        with self._lock:
            rows = self._db().execute("SELECT name, daily_tokens, monthly_tokens FROM tenants ORDER BY name").fetchall()
        return [TenantBudget(*r) for r in rows]

    def tenants(self) -> list[str]:
        """Every tenant that has a key or a budget."""
        if not self.path.exists():
            return []
        with self._lock:
            rows = self._db().execute("SELECT tenant FROM api_keys UNION SELECT name FROM tenants").fetchall()
        return sorted(r[0] for r in rows)
