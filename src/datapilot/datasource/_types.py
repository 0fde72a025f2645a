"""What connectors return: schema descriptions and query results, plus the connector seam."""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from datapilot.core.errors import InvalidRequestError, NotFoundError


class UnsafeSQLError(InvalidRequestError):
    """A statement that is not one read-only query; refused before it reaches the database."""

    default_code = "read_only_violation"


class SQLSyntaxError(InvalidRequestError):
    """A statement sqlglot cannot parse in the source's dialect."""

    default_code = "sql_syntax_error"


class QueryError(InvalidRequestError):
    """The database refused or failed a (read-only) query; the message is the database's."""

    default_code = "query_failed"


class QueryTimeoutError(QueryError):
    default_code = "query_timeout"


class DataSourceNotFoundError(NotFoundError):
    default_code = "datasource_not_found"


@dataclass(slots=True)
class ColumnInfo:
    name: str
    type: str
    nullable: bool = True
    primary_key: bool = False
    comment: str | None = None
    samples: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "nullable": self.nullable,
            "primary_key": self.primary_key,
            "comment": self.comment,
            "samples": [jsonable(v) for v in self.samples],
        }


@dataclass(slots=True)
class ForeignKey:
    columns: list[str]
    ref_table: str
    ref_columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "ref_table": self.ref_table, "ref_columns": self.ref_columns}


@dataclass(slots=True)
class TableInfo:
    name: str
    columns: list[ColumnInfo]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    comment: str | None = None
    row_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "comment": self.comment,
            "row_count": self.row_count,
            "columns": [c.to_dict() for c in self.columns],
            "foreign_keys": [f.to_dict() for f in self.foreign_keys],
        }

    def describe(self) -> str:
        """One line a person or an embedder can read: name, comment, columns."""
        cols = ", ".join(f"{c.name} ({c.comment})" if c.comment else c.name for c in self.columns)
        about = f" -- {self.comment}" if self.comment else ""
        return f"table {self.name}{about}: {cols}"

    def ddl(self, samples: bool = True) -> str:
        """A compact CREATE TABLE for prompts, with keys and a few sample values as comments."""
        lines = []
        for c in self.columns:
            parts = [f"  {c.name} {c.type}"]
            if c.primary_key:
                parts.append("PRIMARY KEY")
            notes = []
            if c.comment:
                notes.append(c.comment)
            if samples and c.samples:
                notes.append("e.g. " + ", ".join(repr(jsonable(v)) for v in c.samples[:3]))
            line = " ".join(parts) + ","
            lines.append(line + (f" -- {'; '.join(notes)}" if notes else ""))
        for fk in self.foreign_keys:
            lines.append(
                f"  FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.ref_table}({', '.join(fk.ref_columns)}),"
            )
        if lines:
            body, _, tail = lines[-1].partition(" -- ")
            lines[-1] = body.rstrip(",") + (f" -- {tail}" if tail else "")
        head = f"CREATE TABLE {self.name} ("
        if self.comment:
            head = f"-- {self.comment}\n" + head
        return head + "\n" + "\n".join(lines) + "\n);"


@dataclass(slots=True)
class QueryResult:
    sql: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sql": self.sql,
            "columns": self.columns,
            "rows": [[jsonable(v) for v in r] for r in self.rows],
            "row_count": len(self.rows),
            "truncated": self.truncated,
            "elapsed_ms": round(self.elapsed_ms, 2),
        }

    def records(self) -> list[dict[str, Any]]:
        return [{c: jsonable(v) for c, v in zip(self.columns, r, strict=False)} for r in self.rows]


def select_tables(names: list[str], tables: list[str] | None) -> list[str]:
    """``names`` narrowed to ``tables`` (matched case-insensitively), or all of them for ``None``."""
    if tables is None:
        return names
    wanted = {t.lower() for t in tables}
    return [n for n in names if n.lower() in wanted]


def jsonable(v: Any) -> Any:
    """Database values as JSON values: decimals to float, dates to ISO text, bytes to hex."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


@runtime_checkable
class Connector(Protocol):
    """A data source: what it holds and read-only queries over it.

    ``dialect`` is a sqlglot dialect name. ``run`` validates the statement as one read-only query,
    executes it on a read-only connection, returns at most ``limit`` rows, and gives up after
    ``timeout_s``.
    """

    dialect: str

    async def tables(self) -> list[str]: ...

    async def schema(self, tables: list[str] | None = None) -> list[TableInfo]: ...

    async def run(self, sql: str, limit: int = 1000, timeout_s: float = 30.0) -> QueryResult: ...

    async def close(self) -> None: ...
