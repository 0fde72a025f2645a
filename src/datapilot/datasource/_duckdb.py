"""DuckDB: a DuckDB database file opened read-only, or CSV / Excel / Parquet files loaded into one.

Files are loaded into an in-memory database, one table per file, with cleaned column names
(``"Order Date "`` becomes ``order_date``). After loading, external access is switched off and the
configuration locked, so no query can read or write files even if one slipped past the guard.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

from datapilot.core.audit import audit_append
from datapilot.core.errors import InvalidRequestError, MissingDependencyError
from datapilot.datasource._guard import check_read_only, limit_rows
from datapilot.datasource._types import (
    ColumnInfo,
    QueryError,
    QueryResult,
    QueryTimeoutError,
    TableInfo,
    select_tables,
)

FILE_KINDS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".xlsx": "excel", ".xlsm": "excel", ".parquet": "parquet"}
SAMPLES_PER_COLUMN = 3


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise MissingDependencyError("duckdb", "all") from None
    return duckdb


def clean_name(raw: object, fallback: str) -> str:
    """A lower-case SQL identifier from a header: accents dropped, runs of other characters to ``_``.

    Letters of other scripts (Chinese headers) are kept: DuckDB accepts them in quoted and bare names.
    """
    text = unicodedata.normalize("NFKD", str(raw if raw is not None else "")).strip()
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^\w]+", "_", text.lower(), flags=re.UNICODE).strip("_")
    if not text:
        text = fallback
    if text[0].isdigit():
        text = f"c_{text}"
    return text


def clean_names(headers: list[object]) -> list[str]:
    """Cleaned, unique column names (``amount``, ``amount_2`` ...)."""
    seen: dict[str, int] = {}
    out = []
    for i, h in enumerate(headers):
        name = clean_name(h, f"column_{i + 1}")
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        out.append(name)
    return out


def table_name_for(path: Path, taken: set[str]) -> str:
    base = clean_name(path.stem, "data")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


class DuckDBConnector:
    """Read-only queries over DuckDB: a database file, or files loaded in memory."""

    dialect = "duckdb"

    def __init__(self, database: str | Path | None = None, files: list[str | Path] | None = None) -> None:
        duckdb = _duckdb()
        self._lock = threading.Lock()  # one DuckDB connection serves one query at a time
        self.files: dict[str, Path] = {}
        self.original_columns: dict[str, dict[str, str]] = {}
        if database is not None:
            path = Path(database).expanduser()
            if not path.is_file():
                raise InvalidRequestError(f"DuckDB file not found: {path}")
            self._con = duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})
        else:
            self._con = duckdb.connect(":memory:")
            for f in files or []:
                self._load(Path(f).expanduser())
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")

    # --- loading files -----------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        kind = FILE_KINDS.get(path.suffix.lower())
        if kind is None:
            raise InvalidRequestError(
                f"unsupported file type {path.suffix!r}; supported: {', '.join(sorted(FILE_KINDS))}"
            )
        if not path.is_file():
            raise InvalidRequestError(f"file not found: {path}")
        table = table_name_for(path, set(self.files))
        try:
            if kind == "excel":
                self._load_excel(path, table)
            else:
                reader = "read_parquet(?)" if kind == "parquet" else "read_csv(?, header = true, sample_size = -1)"
                rel = self._con.sql(f"SELECT * FROM {reader}", params=[str(path)])
                self._create(table, rel.columns, rel, path)
        except InvalidRequestError:
            raise
        except Exception as exc:
            raise InvalidRequestError(f"could not load {path.name}: {exc}") from None
        self.files[table] = path

    def _create(self, table: str, headers: list[str], rel: Any, path: Path) -> None:
        names = clean_names(list(headers))
        self.original_columns[table] = dict(zip(names, (str(h) for h in headers), strict=True))
        select = ", ".join(f'"{h.replace(chr(34), chr(34) * 2)}" AS "{n}"' for h, n in zip(headers, names, strict=True))
        self._con.register("_incoming", rel)
        try:
            self._con.execute(f'CREATE TABLE "{table}" AS SELECT {select} FROM _incoming')
        finally:
            self._con.unregister("_incoming")

    def _load_excel(self, path: Path, table: str) -> None:
        try:
            import openpyxl
            import pyarrow as pa
        except ImportError:
            raise MissingDependencyError("openpyxl", "all") from None
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = book.worksheets[0]
            rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        finally:
            book.close()
        rows = [r for r in rows if any(v is not None and str(v).strip() != "" for v in r)]
        if not rows:
            raise InvalidRequestError(f"{path.name} has no data in its first sheet")
        width = max(len(r) for r in rows)
        headers = [str(h) if h is not None else "" for h in rows[0]] + [""] * (width - len(rows[0]))
        raw_names = [h or f"column_{i + 1}" for i, h in enumerate(headers)]
        body = [r + [None] * (width - len(r)) for r in rows[1:]]
        columns = {}
        for i, name in enumerate(clean_names(list(raw_names))):
            values = [r[i] for r in body]
            kinds = {type(v) for v in values if v is not None}
            if kinds == {int, float}:  # Excel stores 7.0 as 7
                values = [None if v is None else float(v) for v in values]
            elif len(kinds) > 1:  # mixed cells (numbers and text): keep them as text, DuckDB can cast later
                values = [None if v is None else str(v) for v in values]
            columns[name] = values
        arrow = pa.table(columns)
        self.original_columns[table] = dict(zip(columns, raw_names, strict=True))
        self._con.register("_incoming", arrow)
        try:
            self._con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _incoming')
        finally:
            self._con.unregister("_incoming")

    # --- queries -----------------------------------------------------------------------------------------

    async def run(self, sql: str, limit: int = 1000, timeout_s: float = 30.0) -> QueryResult:
        tree = check_read_only(sql, self.dialect)
        runnable = limit_rows(sql, tree, limit + 1, self.dialect)
        audit_append("sql", runnable)  # the statement as it runs, row limit included
        return await asyncio.to_thread(self._run_sync, runnable, limit, timeout_s)

    def _run_sync(self, sql: str, limit: int, timeout_s: float) -> QueryResult:
        duckdb = _duckdb()
        started = time.perf_counter()
        with self._lock:
            cur = self._con.cursor()
            timer = threading.Timer(timeout_s, cur.interrupt)
            timer.start()
            try:
                # In memory nothing is read-only by itself: every query runs in a transaction rolled back.
                cur.execute("BEGIN TRANSACTION")
                cur.execute(sql)
                columns = [d[0] for d in cur.description or []]
                rows = [tuple(r) for r in cur.fetchmany(limit + 1)]
            except duckdb.InterruptException:
                raise QueryTimeoutError(f"the query ran longer than {timeout_s:g} s and was cancelled") from None
            except duckdb.Error as exc:
                raise QueryError(f"the database refused the query: {str(exc).splitlines()[0]}", param="sql") from None
            finally:
                timer.cancel()
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                cur.close()
        return QueryResult(sql, columns, rows[:limit], len(rows) > limit, (time.perf_counter() - started) * 1000)

    # --- schema -------------------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        return await asyncio.to_thread(self._tables_sync)

    def _tables_sync(self) -> list[str]:
        with self._lock:
            rows = self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    async def schema(self, tables: list[str] | None = None) -> list[TableInfo]:
        return await asyncio.to_thread(self._schema_sync, tables)

    def _schema_sync(self, tables: list[str] | None) -> list[TableInfo]:
        names = select_tables(self._tables_sync(), tables)
        out = []
        with self._lock:
            for name in names:
                cols = self._con.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                    [name],
                ).fetchall()
                q = name.replace('"', '""')
                count = int(self._con.execute(f'SELECT COUNT(*) FROM "{q}"').fetchone()[0])
                originals = self.original_columns.get(name, {})
                columns = []
                for col, dtype, nullable in cols:
                    c = col.replace('"', '""')
                    samples = [
                        r[0]
                        for r in self._con.execute(
                            f'SELECT DISTINCT "{c}" FROM "{q}" WHERE "{c}" IS NOT NULL LIMIT {SAMPLES_PER_COLUMN}'
                        ).fetchall()
                    ]
                    original = originals.get(col)
                    comment = f"from column {original!r}" if original and original != col else None
                    columns.append(ColumnInfo(col, str(dtype), nullable == "YES", False, comment, samples))
                source = self.files.get(name)
                out.append(TableInfo(name, columns, [], f"loaded from {source.name}" if source else None, count))
        return out

    async def ping(self) -> None:
        await self.run("SELECT 1", limit=1, timeout_s=10)

    async def close(self) -> None:
        with self._lock:
            self._con.close()
