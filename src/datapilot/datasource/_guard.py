"""Read-only by construction: a statement must parse as exactly one query, or it never runs.

The check works on sqlglot's syntax tree, not on keywords in the text, so ``SELECT 'drop table'`` is
fine and ``WITH d AS (DELETE ... RETURNING *) SELECT ...`` is not. It is the first of two locks: every
connector also opens its connection read-only where the engine allows it.
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datapilot.datasource._types import SQLSyntaxError, UnsafeSQLError

# sqlglot logs "falling back to parsing as a Command" for statements it does not model; those are
# refused anyway, so the log line is noise.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_QUERY_ROOTS = (exp.Select, exp.SetOperation)

# Nodes that write, change the session, or reach outside the database.
_FORBIDDEN_NODES: tuple[type, ...] = (
    exp.DML,
    exp.DDL,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,
    exp.Copy,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Into,  # SELECT ... INTO new_table / OUTFILE
    exp.Lock,  # SELECT ... FOR UPDATE takes row locks
    exp.Install,
    exp.Use,
    exp.Grant,
    exp.Revoke,
    exp.Analyze,
    exp.LoadData,
    exp.Kill,
    exp.Export,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.Comment,
)

# Functions that write or read files, change state, load code, or reach other servers.
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        # SQLite
        "load_extension", "writefile", "readfile", "edit", "fts3_tokenizer", "zipfile", "sqlar_compress",
        # PostgreSQL
        "lo_export", "lo_import", "lo_unlink", "lo_create", "lo_put", "lo_from_bytea", "pg_read_file",
        "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write", "pg_write_file", "pg_file_unlink",
        "pg_file_rename", "dblink", "dblink_exec", "dblink_connect", "setval", "nextval", "set_config",
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal",
        "pg_create_restore_point", "pg_advisory_lock", "pg_advisory_xact_lock", "pg_try_advisory_lock",
        "pg_promote", "pg_logical_emit_message", "txid_current", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
        "query_to_xml", "query_to_xml_and_xmlschema", "table_to_xml", "cursor_to_xml",
        # MySQL / MariaDB
        "load_file", "sleep", "benchmark", "get_lock", "release_lock", "release_all_locks", "sys_exec", "sys_eval",
        "master_pos_wait", "source_pos_wait",
        # DuckDB: table functions that read files or run text as SQL
        "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
        "read_json_objects", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects", "read_text", "read_blob",
        "csv_scan", "json_scan", "glob", "sniff_csv", "query", "query_table", "parquet_metadata", "parquet_schema",
        "iceberg_scan", "delta_scan", "sqlite_scan", "sqlite_attach", "postgres_scan", "postgres_attach",
        "mysql_scan", "read_xlsx", "st_read",
    }
)  # fmt: skip


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower()


def _function_names(node: exp.Func) -> set[str]:
    names = {_function_name(node)}
    if not isinstance(node, exp.Anonymous):
        names.add(type(node).__name__.lower())
        names.update(n.lower() for n in getattr(node, "_sql_names", ()))
    return names


def _refuse(sql: str, why: str) -> UnsafeSQLError:
    shown = " ".join(sql.split())
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return UnsafeSQLError(f"refused: {why}; only one read-only SELECT query may run (got: {shown})", param="sql")


def check_read_only(sql: str, dialect: str = "sqlite") -> exp.Expression:
    """Parse ``sql`` and return its tree if it is exactly one read-only query; raise otherwise.

    Raises ``UnsafeSQLError`` for anything that could write, lock, change the session or touch files,
    and ``SQLSyntaxError`` when the text does not parse in ``dialect``.
    """
    if not sql or not sql.strip():
        raise SQLSyntaxError("empty SQL statement", param="sql")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as exc:
        # Text sqlglot cannot read never runs either; writes that fail to parse stay refused.
        raise SQLSyntaxError(f"could not parse the SQL as {dialect}: {_first_line(str(exc))}", param="sql") from None
    if len(statements) != 1:
        raise _refuse(sql, f"{len(statements)} statements")
    tree = statements[0]
    if not isinstance(tree, _QUERY_ROOTS):
        kind = type(tree).__name__.upper()
        raise _refuse(sql, f"a {kind} statement is not a query")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise _refuse(sql, f"{type(node).__name__.upper()} inside the query")
        if isinstance(node, exp.Func):
            bad = _function_names(node) & _FORBIDDEN_FUNCTIONS
            if bad:
                raise _refuse(sql, f"function {sorted(bad)[0]}() is not allowed")
        if isinstance(node, exp.Table) and (isinstance(node.this, exp.Literal) or _looks_like_file(node.name)):
            raise _refuse(sql, f"reading the file {node.name!r} is not allowed")
    return tree


_FILE_SUFFIX = re.compile(
    r"\.(csv|tsv|txt|json|jsonl|ndjson|parquet|xlsx|xls|gz|zst|db|sqlite|sqlite3|duckdb|arrow|avro)$", re.I
)


def _looks_like_file(name: str) -> bool:
    # DuckDB reads a file named as a table ("FROM 'x.csv'", "FROM \"/etc/passwd\""): no such names.
    return "/" in name or "\\" in name or "://" in name or bool(_FILE_SUFFIX.search(name))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def limit_rows(sql: str, tree: exp.Expression, limit: int, dialect: str) -> str:
    """``sql`` with ``LIMIT limit`` added when it is a plain SELECT without a limit of its own.

    Connectors pass their row limit plus one: the extra row tells them the result was cut. Queries
    that keep their own text still have their rows fetched ``limit`` at a time.
    """
    if isinstance(tree, exp.Select) and tree.args.get("limit") is None and tree.args.get("fetch") is None:
        return tree.copy().limit(limit).sql(dialect=dialect)
    return sql.strip().rstrip(";")
