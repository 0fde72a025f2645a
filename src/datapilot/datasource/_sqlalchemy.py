"""SQLite, PostgreSQL and MySQL/MariaDB through SQLAlchemy, on read-only connections.

Each engine is locked twice: the statement passes ``check_read_only`` first, and the connection
itself refuses writes (SQLite opened with ``mode=ro`` and ``query_only``, PostgreSQL with
``default_transaction_read_only``, MariaDB/MySQL with ``SET SESSION TRANSACTION READ ONLY``). Every
query runs with an engine-side timeout and its transaction is rolled back, never committed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from datapilot.core.audit import audit_append
from datapilot.core.errors import InvalidRequestError, MissingDependencyError
from datapilot.datasource._guard import check_read_only, limit_rows
from datapilot.datasource._types import (
    ColumnInfo,
    ForeignKey,
    QueryError,
    QueryResult,
    QueryTimeoutError,
    TableInfo,
    select_tables,
)

log = logging.getLogger("datapilot.datasource")

_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
SAMPLES_PER_COLUMN = 3


def sqlite_read_only_url(path: str | Path) -> str:
    """A SQLAlchemy URL opening ``path`` read-only (SQLite URI ``mode=ro``); the file must exist."""
    resolved = Path(path).expanduser().resolve()
    return f"sqlite:///file:{quote(str(resolved))}?mode=ro&uri=true"


def _db_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).strip()
    return msg.splitlines()[0] if msg else type(exc).__name__


class SQLAlchemyConnector:
    """A read-only connector over any SQLAlchemy URL (SQLite, PostgreSQL, MySQL/MariaDB)."""

    def __init__(self, url: str | URL, *, password: str | None = None, connect_timeout_s: float = 10.0) -> None:
        parsed = make_url(url)
        if password is not None:
            parsed = parsed.set(password=password)
        backend = parsed.get_backend_name()
        if backend not in _DIALECTS:
            raise InvalidRequestError(f"unsupported database kind {backend!r}; supported: {', '.join(_DIALECTS)}")
        self.backend = backend
        self.dialect = _DIALECTS[backend]
        self.url = parsed
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if backend == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:"):
                raise InvalidRequestError("a SQLite data source needs a database file")
            if not database.startswith("file:"):
                if not Path(database).expanduser().is_file():
                    raise InvalidRequestError(f"SQLite file not found: {database}")
                parsed = make_url(sqlite_read_only_url(database))
            kwargs["connect_args"] = {"check_same_thread": False}
        elif backend == "postgresql":
            kwargs["connect_args"] = {
                "options": "-c default_transaction_read_only=on",
                "connect_timeout": int(connect_timeout_s),
            }
        else:
            kwargs["connect_args"] = {"connect_timeout": int(connect_timeout_s)}
        try:
            self._engine: Engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise MissingDependencyError(str(getattr(exc, "name", None) or backend), "stores") from None
        self._mariadb = False
        event.listen(self._engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            if self.backend == "sqlite":
                cur.execute("PRAGMA query_only = ON")
            elif self.backend in ("mysql", "mariadb"):
                cur.execute("SET SESSION TRANSACTION READ ONLY")
                cur.execute("SELECT VERSION()")
                self._mariadb = "mariadb" in str(cur.fetchone()[0]).lower()
        finally:
            cur.close()

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    # --- queries -------------------------------------------------------------------------------------

    async def run(self, sql: str, limit: int = 1000, timeout_s: float = 30.0) -> QueryResult:
        tree = check_read_only(sql, self.dialect)
        runnable = limit_rows(sql, tree, limit + 1, self.dialect)
        audit_append("sql", runnable)  # the statement as it runs, row limit included
        try:
            # The engine enforces the timeout; this one only stops waiting for an engine that ignores it.
            return await asyncio.wait_for(
                asyncio.to_thread(self._run_sync, runnable, limit, timeout_s), timeout=timeout_s + 5
            )
        except TimeoutError:
            raise QueryTimeoutError(f"the query ran longer than {timeout_s:g} s and was cancelled") from None

    def _run_sync(self, sql: str, limit: int, timeout_s: float) -> QueryResult:
        started = time.perf_counter()
        try:
            connection = self._engine.connect()
        except SQLAlchemyError as exc:  # unreachable server, bad credentials: the caller's to fix, not a 500
            raise QueryError(f"could not connect to the database: {_db_error(exc)}", code="connection_failed") from None
        with connection as conn:
            try:
                self._arm_timeout(conn, timeout_s)
                result = conn.execution_options(stream_results=self.backend != "sqlite").execute(text(sql))
                columns = list(result.keys())
                rows = [tuple(r) for r in result.fetchmany(limit + 1)]
                result.close()
            except DBAPIError as exc:
                message = _db_error(exc)
                if _is_timeout(message):
                    raise QueryTimeoutError(f"the query ran longer than {timeout_s:g} s and was cancelled") from None
                raise QueryError(f"the database refused the query: {message}", param="sql") from None
            except SQLAlchemyError as exc:
                raise QueryError(f"the query failed: {_db_error(exc)}", param="sql") from None
            finally:
                self._disarm(conn)
                conn.rollback()
        truncated = len(rows) > limit
        return QueryResult(sql, columns, rows[:limit], truncated, (time.perf_counter() - started) * 1000)

    def _arm_timeout(self, conn: Connection, timeout_s: float) -> None:
        if self.backend == "sqlite":
            raw = conn.connection.driver_connection
            deadline = time.monotonic() + timeout_s
            assert isinstance(raw, sqlite3.Connection)
            raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        elif self.backend == "postgresql":
            conn.exec_driver_sql(f"SET statement_timeout = {int(timeout_s * 1000)}")
        elif self._mariadb:
            conn.exec_driver_sql(f"SET SESSION max_statement_time = {timeout_s:.3f}")
        else:
            conn.exec_driver_sql(f"SET SESSION max_execution_time = {int(timeout_s * 1000)}")

    def _disarm(self, conn: Connection) -> None:
        if self.backend == "sqlite":
            raw = conn.connection.driver_connection
            if isinstance(raw, sqlite3.Connection):
                raw.set_progress_handler(None, 0)

    # --- schema ------------------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        return await asyncio.to_thread(self._tables_sync)

    def _tables_sync(self) -> list[str]:
        try:
            insp = inspect(self._engine)
            return sorted(insp.get_table_names() + insp.get_view_names())
        except SQLAlchemyError as exc:
            raise QueryError(f"could not read the schema: {_db_error(exc)}") from None

    async def schema(self, tables: list[str] | None = None) -> list[TableInfo]:
        return await asyncio.to_thread(self._schema_sync, tables)

    def _schema_sync(self, tables: list[str] | None) -> list[TableInfo]:
        names = select_tables(self._tables_sync(), tables)
        insp = inspect(self._engine)
        out = []
        with self._engine.connect() as conn:
            quote_id = self._engine.dialect.identifier_preparer.quote
            for name in names:
                pk = set(insp.get_pk_constraint(name).get("constrained_columns") or [])
                columns = [
                    ColumnInfo(
                        c["name"],
                        str(c["type"]),
                        bool(c.get("nullable", True)),
                        c["name"] in pk,
                        c.get("comment"),
                    )
                    for c in insp.get_columns(name)
                ]
                fks = [
                    ForeignKey(fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                    for fk in insp.get_foreign_keys(name)
                ]
                comment = None
                if self.backend == "sqlite":
                    notes = _sqlite_column_comments(conn, name)
                    for col in columns:
                        col.comment = col.comment or notes.get(col.name)
                else:
                    try:
                        comment = insp.get_table_comment(name).get("text")
                    except (NotImplementedError, SQLAlchemyError):
                        comment = None
                table = quote_id(name)
                try:
                    count = int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() or 0)
                    for col in columns:
                        c = quote_id(col.name)
                        q = f"SELECT DISTINCT {c} FROM {table} WHERE {c} IS NOT NULL LIMIT {SAMPLES_PER_COLUMN}"
                        col.samples = [r[0] for r in conn.exec_driver_sql(q)]
                except SQLAlchemyError:
                    count = None
                finally:
                    conn.rollback()
                out.append(TableInfo(name, columns, fks, comment, count))
        return out

    async def ping(self) -> None:
        await self.run("SELECT 1", limit=1, timeout_s=10)

    async def close(self) -> None:
        self._engine.dispose()


def _sqlite_column_comments(conn: Connection, table: str) -> dict[str, str]:
    """SQLite keeps no column comments, but keeps the CREATE TABLE text: read its ``-- notes``."""
    row = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).first()
    notes: dict[str, str] = {}
    for line in str(row[0] if row and row[0] else "").splitlines():
        body, sep, note = line.partition("--")
        words = body.strip().split()
        if sep and words and note.strip():
            notes[words[0].strip('"`[]')] = note.strip()
    return notes


def _is_timeout(message: str) -> bool:
    m = message.lower()
    return any(
        s in m
        for s in ("interrupted", "statement timeout", "canceling statement", "max_statement_time", "execution time")
    )
