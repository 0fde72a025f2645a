"""Dialect transpilation with sqlglot: a query written for one engine, rewritten for another."""

from __future__ import annotations

import sqlglot
from sqlglot.errors import SqlglotError

# Dialects models most often write in, tried in this order when the target's own parser fails.
_FALLBACK_READS = ("sqlite", "mysql", "postgres", "duckdb", "tsql", "bigquery")


def transpile(sql: str, target: str, source: str | None = None) -> str:
    """``sql`` rewritten for ``target``. With ``source`` it is read as that dialect; without one it is
    read as the target's when it parses so, else as the first common dialect that reads it. Text no
    dialect reads comes back unchanged (the guard will report the syntax error)."""
    reads = (source,) if source else (target, *[d for d in _FALLBACK_READS if d != target])
    for read in reads:
        try:
            out = sqlglot.transpile(sql, read=read, write=target)
        except SqlglotError:
            continue
        if len(out) == 1:
            return out[0] if read != target else sql.strip().rstrip(";")
    return sql
