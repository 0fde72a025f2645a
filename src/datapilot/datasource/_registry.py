"""Registered data sources: their definitions in the metadata store, and open connectors to them.

Definitions live in a SQLAlchemy table (SQLite under DATAPILOT_HOME by default, any SQLAlchemy URL
otherwise). A password is kept apart from the URL, in its own column, encrypted with the home's
secret key (``datapilot.core.secrets``; a plain-text password from before is re-saved encrypted when
the store opens), and nothing this module returns, prints or logs contains it: public views show
``***``. A URL with a host is checked against the outbound policy (``[security]``) when the source is
added and again before each connection.

Each source belongs to a tenant (``owner``: the tenant of the request that added it, ``default`` outside
a request; NULL in rows from before tenants, which are the default tenant's). ``DataSources.get`` is the
one lookup every use goes through (the API's routes, the chat scenes, agents, flows, value indexes and
examples): another tenant's source is answered exactly as a missing one (404), and a source outside the
key's scopes is a 403.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from datapilot.core.audit import audit_note
from datapilot.core.config import DataSettings
from datapilot.core.errors import ConfigError, ConflictError, InvalidRequestError
from datapilot.core.outbound import OutboundPolicy, outbound_policy
from datapilot.core.registry import Registry
from datapilot.core.secrets import SecretBox, is_encrypted
from datapilot.core.tenancy import DEFAULT_TENANT, can_see, owner_filter, owner_of_new, require_scope
from datapilot.datasource._duckdb import FILE_KINDS, DuckDBConnector
from datapilot.datasource._sample import SAMPLE_NAME, ensure_sample_database
from datapilot.datasource._sqlalchemy import SQLAlchemyConnector
from datapilot.datasource._types import Connector, DataSourceNotFoundError

log = logging.getLogger("datapilot.datasource")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
NAME_TAKEN = "the name {name!r} is taken; choose another"
URL_KINDS = ("sqlite", "postgresql", "mysql", "mariadb")
FILE_SOURCE_KINDS = ("csv", "excel", "parquet", "files")


class DataSourceConfig(BaseModel):
    """A data source definition. SQL engines take ``url`` (or ``path`` for SQLite); DuckDB takes
    ``path``; CSV / Excel / Parquet take ``files`` (loaded into DuckDB)."""

    model_config = {"extra": "forbid"}

    name: str
    kind: str = Field(description="sqlite, duckdb, postgresql, mysql, mariadb, csv, excel, parquet, files")
    url: str | None = Field(None, description="SQLAlchemy URL; a password in it is moved to `password`")
    path: str | None = Field(None, description="SQLite or DuckDB database file")
    files: list[str] = Field(default_factory=list, description="CSV / xlsx / Parquet files, one table each")
    password: SecretStr | None = None
    description: str = ""
    sql_model: str | None = Field(
        None,
        description="the model that answers this source's questions when a request names none "
        "(e.g. the one `datapilot train text2sql --db NAME` fine-tuned on it)",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("a data source name is 1-64 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("kind")
    @classmethod
    def _kind_ok(cls, v: str) -> str:
        v = v.lower()
        if v not in connector_kinds():
            raise ValueError(f"unknown data source kind {v!r}; known: {', '.join(connector_kinds())}")
        return v

    def normalised(self) -> DataSourceConfig:
        """Password moved out of the URL; SQLite given as a path gets a URL and the reverse."""
        data = self.model_dump()
        data["password"] = self.password
        if self.url:
            try:
                url = make_url(self.url)
            except ArgumentError:
                raise InvalidRequestError("the data source URL is not a valid SQLAlchemy URL", param="url") from None
            if url.password is not None:
                if data["password"] is None:
                    data["password"] = SecretStr(str(url.password))
                url = url._replace(password=None)  # URL.set treats None as 'unchanged'
            data["url"] = url.render_as_string(hide_password=False)
        if self.kind in URL_KINDS and not data["url"]:
            if self.kind == "sqlite" and self.path:
                data["url"] = f"sqlite:///{Path(self.path).expanduser().resolve()}"
            else:
                raise InvalidRequestError(f"a {self.kind} data source needs url", param="url")
        if self.kind == "duckdb" and not self.path:
            raise InvalidRequestError("a duckdb data source needs path (a .duckdb file)", param="path")
        if self.kind in FILE_SOURCE_KINDS:
            if not self.files and self.path:
                data["files"] = [self.path]
            if not data["files"]:
                raise InvalidRequestError(f"a {self.kind} data source needs files", param="files")
            data["files"] = [str(Path(f).expanduser().resolve()) for f in data["files"]]
        return DataSourceConfig.model_validate(data)

    def check_outbound(self, policy: OutboundPolicy) -> None:
        """Refuse (400 ``url_not_allowed``) a URL whose host, or a ``host`` query parameter, the policy refuses."""
        if not self.url:
            return
        try:
            url = make_url(self.url)
        except ArgumentError:
            raise InvalidRequestError("the data source URL is not a valid SQLAlchemy URL", param="url") from None
        what = f"data source {self.name!r}: the URL's host"
        policy.check_host(url.host, what=what, param="url")
        for key in ("host", "hostaddr"):
            values = url.query.get(key)
            for value in [values] if isinstance(values, str) else list(values or ()):
                for host in str(value).split(","):  # libpq takes a list of hosts
                    if not host.startswith("/"):  # a Unix socket folder
                        policy.check_host(host.rsplit(":", 1)[0] if host.count(":") == 1 else host, what=what)

    def public(self) -> dict[str, Any]:
        """The definition as shown to people: never the password."""
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "path": self.path,
            "files": self.files,
            "password": "***" if self.password is not None else None,
            "description": self.description,
            "sql_model": self.sql_model,
        }


ConnectorFactory = Callable[[DataSourceConfig], Connector]
_FACTORIES: Registry[ConnectorFactory] = Registry("data source kind", error=ConfigError)


def register_connector(kind: str, factory: ConnectorFactory, *, replace: bool = False) -> None:
    """Make ``kind`` usable in data source definitions (built-ins register the same way)."""
    _FACTORIES.register(kind.lower(), factory, replace=replace)


def connector_kinds() -> list[str]:
    return _FACTORIES.names()


def open_connector(config: DataSourceConfig) -> Connector:
    return _FACTORIES.get(config.kind)(config)


def _sql(config: DataSourceConfig) -> Connector:
    password = config.password.get_secret_value() if config.password is not None else None
    url = config.url or ""
    if config.kind == "mariadb" and url.startswith("mariadb"):
        url = "mysql" + url.removeprefix("mariadb")
    return SQLAlchemyConnector(url, password=password)


def _duck(config: DataSourceConfig) -> Connector:
    return DuckDBConnector(database=config.path)


def _files(config: DataSourceConfig) -> Connector:
    return DuckDBConnector(files=list(config.files))


for _kind in URL_KINDS:
    register_connector(_kind, _sql)
register_connector("duckdb", _duck)
for _kind in FILE_SOURCE_KINDS:
    register_connector(_kind, _files)


class DataSourceStore:
    """Definitions in the metadata store (a SQLAlchemy database). Passwords are encrypted with
    ``secrets`` (``at_home``: the home's key); without one only ``DATAPILOT_SECRET_KEY`` can be used.

    Each row has an ``owner`` (a tenant; NULL: made before tenants, the default tenant's). The store
    only records it; ``DataSources`` decides who sees what."""

    def __init__(self, url: str, *, secrets: SecretBox | None = None) -> None:
        self.url = url
        self.secrets = secrets or SecretBox(None)
        self._engine: Engine = create_engine(url)
        meta = MetaData()
        self._table = Table(
            "datasources",
            meta,
            Column("name", String(64), primary_key=True),
            Column("kind", String(32), nullable=False),
            Column("spec", Text, nullable=False),  # JSON without the password
            Column("secret", Text, nullable=True),
            Column("created_at", Float, nullable=False),
            Column("owner", String(64), nullable=True),  # the tenant; NULL: the default tenant
        )
        meta.create_all(self._engine)
        self._add_owner_column()
        self._encrypt_plain_rows()

    @classmethod
    def at_home(cls, home: Path) -> DataSourceStore:
        home.mkdir(parents=True, exist_ok=True)
        path = home / "metadata.db"
        fresh = not path.exists()
        store = cls(f"sqlite:///{path}", secrets=SecretBox.at_home(home))
        if fresh:
            os.chmod(path, 0o600)  # it holds data source passwords (encrypted)
        return store

    @classmethod
    def for_settings(cls, settings: DataSettings, home: Path) -> DataSourceStore:
        """The store ``settings`` name (``metadata_url``, else ``home/metadata.db``), with the home's key."""
        if settings.metadata_url:
            return cls(settings.metadata_url, secrets=SecretBox.at_home(home))
        return cls.at_home(home)

    def _add_owner_column(self) -> None:
        """A metadata store from before tenants gets the ``owner`` column; its rows keep NULL, the
        default tenant's (``create_all`` leaves an existing table as it is)."""
        columns = {c["name"] for c in inspect(self._engine).get_columns("datasources")}
        if "owner" in columns:
            return
        with self._engine.begin() as conn:
            conn.execute(text("ALTER TABLE datasources ADD COLUMN owner VARCHAR(64)"))
        log.info("the data source store got an owner column; its sources belong to the default tenant")

    def _encrypt_plain_rows(self) -> None:
        """Passwords stored in plain text (before encryption) are re-saved encrypted."""
        t = self._table
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.c.name, t.c.secret).where(t.c.secret.is_not(None))).fetchall()
        plain = [(r.name, r.secret) for r in rows if not is_encrypted(r.secret)]
        if not plain:
            return
        try:
            sealed = [(name, self.secrets.encrypt(secret)) for name, secret in plain]
        except ConfigError as e:  # no key to encrypt with (a store without a home, no DATAPILOT_SECRET_KEY)
            log.warning("%d data source password(s) stay in plain text: %s", len(plain), e.message)
            return
        with self._engine.begin() as conn:
            for name, secret in sealed:
                conn.execute(t.update().where(t.c.name == name).values(secret=secret))
        log.info("%d data source password(s) stored in plain text were encrypted", len(sealed))

    def add(self, config: DataSourceConfig, *, replace: bool = False, owner: str | None = None) -> None:
        """Store a definition owned by ``owner`` (default: ``owner_of_new()``, the caller's tenant). A
        replaced definition keeps its owner."""
        spec = config.model_dump(exclude={"password", "name", "kind"})
        row = {
            "name": config.name,
            "kind": config.kind,
            "spec": json.dumps(spec),
            "secret": self.secrets.encrypt(config.password.get_secret_value()) if config.password is not None else None,
            "created_at": time.time(),
            "owner": owner or owner_of_new(),
        }
        t = self._table
        with self._engine.begin() as conn:
            if replace:
                old = conn.execute(select(t.c.owner).where(t.c.name == config.name)).first()
                if old is not None and owner is None:
                    row["owner"] = old.owner
                conn.execute(delete(t).where(t.c.name == config.name))
            try:
                conn.execute(insert(t).values(**row))
            except IntegrityError:  # added meanwhile, maybe by another tenant: say nothing about it
                raise ConflictError(NAME_TAKEN.format(name=config.name), param="name") from None

    def get(self, name: str) -> DataSourceConfig | None:
        entry = self.entry(name)
        return None if entry is None else entry[0]

    def entry(self, name: str) -> tuple[DataSourceConfig, str] | None:
        """The definition of ``name`` and its owner (the default tenant for a row from before tenants)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(self._table).where(self._table.c.name == name)).first()
        return None if row is None else (self._config(row), row.owner or DEFAULT_TENANT)

    def list(self) -> builtins.list[DataSourceConfig]:
        return [config for config, _ in self.entries()]

    def entries(self, owner: str | None = None) -> builtins.list[tuple[DataSourceConfig, str]]:
        """Every definition with its owner, by name; ``owner``: only that tenant's."""
        t = self._table
        query = select(t).order_by(t.c.name)
        if owner == DEFAULT_TENANT:
            query = query.where((t.c.owner == owner) | t.c.owner.is_(None))
        elif owner is not None:
            query = query.where(t.c.owner == owner)
        with self._engine.connect() as conn:
            rows = conn.execute(query).fetchall()
        return [(self._config(r), r.owner or DEFAULT_TENANT) for r in rows]

    def remove(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(self._table).where(self._table.c.name == name)).rowcount)

    def _config(self, row: Any) -> DataSourceConfig:
        spec = json.loads(row.spec)
        what = f"the password of data source {row.name!r}"
        password = SecretStr(self.secrets.decrypt(row.secret, what=what)) if row.secret is not None else None
        return DataSourceConfig(name=row.name, kind=row.kind, password=password, **spec)

    def close(self) -> None:
        self._engine.dispose()


class DataSources:
    """The data sources a process uses: the store of definitions and a connector per source, opened
    on first use and kept. Library users, the CLI and the server all go through this."""

    def __init__(
        self,
        settings: DataSettings,
        home: Path,
        store: DataSourceStore | None = None,
        *,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.home = home
        self.store = store or DataSourceStore.for_settings(settings, home)
        self._outbound = outbound  # None: the process-wide policy (``set_outbound_policy``)
        self._open: dict[str, Connector] = {}
        self._lock = asyncio.Lock()
        if settings.sample:
            self.ensure_sample()

    def ensure_sample(self) -> DataSourceConfig:
        """Build the sample business database under the data folder and register it as ``sample``."""
        path = ensure_sample_database(self.home / "data")
        config = DataSourceConfig(
            name=SAMPLE_NAME,
            kind="sqlite",
            path=str(path),
            description="Sample wholesale business: regions, employees, customers, suppliers, products, orders",
        ).normalised()
        existing = self.store.get(SAMPLE_NAME)
        if existing is not None and existing.sql_model:  # a model chosen for it (e.g. trained on it) stays
            config = config.model_copy(update={"sql_model": existing.sql_model})
        if existing is None or existing.model_dump() != config.model_dump():
            self.store.add(config, replace=True, owner=None if existing is not None else DEFAULT_TENANT)
        return config

    def list(self) -> list[DataSourceConfig]:
        """The sources the caller may see: its tenant's (an admin: all)."""
        return [config for config, _ in self.owned()]

    def owned(self) -> builtins.list[tuple[DataSourceConfig, str]]:
        """The sources the caller may see, each with its owner."""
        return self.store.entries(owner_filter())

    def get(self, name: str) -> DataSourceConfig:
        """The one lookup every use of a source goes through: a source another tenant owns is answered
        exactly as a missing one (404, naming only the caller's sources); one outside the key's scopes
        is a 403."""
        entry = self.store.entry(name)
        if entry is None or not can_see(entry[1]):
            known = ", ".join(c.name for c in self.list()) or "none"
            raise DataSourceNotFoundError(f"no data source named {name!r} (registered: {known})", param="datasource")
        require_scope("datasources", name)
        return entry[0]

    async def add(self, config: DataSourceConfig, *, test: bool = True, replace: bool = False) -> DataSourceConfig:
        """Register a source; with ``test`` it must answer ``SELECT 1`` first."""
        config = config.normalised()
        self._check_name_free(config.name, replace)
        await asyncio.to_thread(config.check_outbound, self.outbound)  # resolves host names
        if test:
            connector = open_connector(config)
            try:
                await connector.run("SELECT 1", limit=1, timeout_s=self.settings.timeout_s)
            finally:
                await connector.close()
        self.store.add(config, replace=replace)
        await self._drop(config.name)
        log.info("data source %s (%s) registered", config.name, config.kind)
        return config

    def _check_name_free(self, name: str, replace: bool) -> None:
        """Names are global: one another tenant holds is a 409 that does not say whose it is; one the
        caller's tenant holds is a 409 unless it is replaced. Outside the key's scopes: 403."""
        entry = self.store.entry(name)
        if entry is not None and not can_see(entry[1]):
            raise ConflictError(NAME_TAKEN.format(name=name), param="name")
        require_scope("datasources", name)
        if entry is not None and not replace:
            raise ConflictError(f"a data source named {name!r} already exists", param="name")

    @property
    def outbound(self) -> OutboundPolicy:
        return self._outbound if self._outbound is not None else outbound_policy()

    async def add_sqlite_files(self, databases: Mapping[str, str | Path]) -> builtins.list[str]:
        """Register SQLite files by name (``[awel] databases``: what flows may query), unless a source
        of that name exists; returns the names added."""
        added: builtins.list[str] = []
        for name, path in databases.items():
            if self.store.get(name) is None:
                await self.add(DataSourceConfig(name=name, kind="sqlite", path=str(path)))
                added.append(name)
        return added

    async def add_upload(self, filename: str, data: bytes, name: str | None = None) -> DataSourceConfig:
        """Save an uploaded CSV / Excel / Parquet file under the data folder and register it."""
        suffix = Path(filename).suffix.lower()
        kind_by_suffix = {"csv": "csv", "excel": "excel", "parquet": "parquet"}
        kind = kind_by_suffix.get(FILE_KINDS.get(suffix, ""), None)
        if kind is None:
            raise InvalidRequestError(
                f"unsupported file type {suffix or filename!r}; upload .csv, .tsv, .xlsx or .parquet", param="file"
            )
        if len(data) > self.settings.max_upload_bytes:
            raise InvalidRequestError(f"the file is over the upload limit of {self.settings.max_upload_bytes} bytes")
        upload_id = uuid.uuid4().hex[:8]
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(filename).stem).strip("_").lower()[:40] or "upload"
        folder = self.home / "uploads" / upload_id
        target = folder / f"{stem}{suffix}"
        config = DataSourceConfig(
            name=name or f"{stem}-{upload_id}", kind=kind, files=[str(target)], description=f"uploaded {filename}"
        )
        self._check_name_free(config.name, replace=False)  # a refused name leaves no file behind
        folder.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return await self.add(config)

    async def remove(self, name: str) -> None:
        self.get(name)
        await self._drop(name)
        self.store.remove(name)

    async def connector(self, name: str) -> Connector:
        """An open connector to ``name``, for the caller (``get`` checks it may use it, every time)."""
        config = self.get(name)
        audit_note(data_source=name)
        async with self._lock:
            if name not in self._open:
                await asyncio.to_thread(config.check_outbound, self.outbound)  # resolves host names
                self._open[name] = await asyncio.to_thread(open_connector, config)
            return self._open[name]

    async def _drop(self, name: str) -> None:
        async with self._lock:
            connector = self._open.pop(name, None)
        if connector is not None:
            await connector.close()

    async def close(self) -> None:
        async with self._lock:
            open_now, self._open = list(self._open.values()), {}
        for c in open_now:
            await c.close()
        self.store.close()
