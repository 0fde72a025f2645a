"""Bad input: statements that try to write, from a caller or from a model, on SQLite, DuckDB and real
PostgreSQL and MariaDB servers. Each is refused before it reaches the database, the connection itself
refuses writes that skip the guard, and a checksum / row counts before and after prove nothing changed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from datapilot.datasource import (
    Connector,
    DuckDBConnector,
    QueryError,
    QueryTimeoutError,
    SQLAlchemyConnector,
    SQLSyntaxError,
    UnsafeSQLError,
    check_read_only,
)
from datapilot.text2sql import Text2SQL, Text2SQLOptions
from tests.text2sql.conftest import ScriptedFactory, sha256

# Refused on every engine, by the guard, as writes (not merely as syntax errors).
WRITES = [
    "DROP TABLE orders",
    "DELETE FROM orders",
    "UPDATE orders SET status = 'hacked'",
    "INSERT INTO regions VALUES (99, 'Nowhere', 'Atlantis')",
    "SELECT 1; DROP TABLE orders",
    "SELECT * FROM orders; DELETE FROM orders",
    "select count(*) from orders;\nDROP TABLE regions;",
    "WITH gone AS (DELETE FROM orders RETURNING *) SELECT COUNT(*) FROM gone",
    "CREATE TABLE stolen AS SELECT * FROM orders",
    "ALTER TABLE orders ADD COLUMN x INTEGER",
    "TRUNCATE TABLE orders",
    "SELECT * FROM orders FOR UPDATE",
]

# Refused too (as writes or as text that does not parse in the dialect); engine-specific tricks.
ENGINE_TRICKS = {
    "sqlite": [
        "ATTACH DATABASE '/tmp/dp-evil.db' AS evil",
        "PRAGMA writable_schema = 1",
        "PRAGMA writable_schema=ON; UPDATE sqlite_master SET sql = 'x'",
        "VACUUM INTO '/tmp/dp-evil.db'",
        "SELECT load_extension('/tmp/evil.so')",
        "REPLACE INTO regions VALUES (1, 'x', 'y')",
        "COPY orders TO '/tmp/dp-evil.csv'",
        "SELECT * INTO orders_copy FROM orders",
    ],
    "duckdb": [
        "ATTACH '/tmp/dp-evil.duckdb' AS evil",
        "COPY orders TO '/tmp/dp-evil.csv'",
        "COPY (SELECT * FROM orders) TO '/tmp/dp-evil.parquet' (FORMAT PARQUET)",
        "EXPORT DATABASE '/tmp/dp-evil'",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SET enable_external_access = true",
        "PRAGMA writable_schema = 1",
    ],
    "postgres": [
        "COPY orders TO '/tmp/dp-evil.csv'",
        "COPY (SELECT 1) TO PROGRAM 'touch /tmp/dp-evil'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT lo_export(1, '/tmp/dp-evil')",
        "SELECT * INTO orders_copy FROM orders",
        "SET default_transaction_read_only = off",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT pg_sleep(100)",
    ],
    "mysql": [
        "SELECT * FROM orders INTO OUTFILE '/tmp/dp-evil.csv'",
        "SELECT * FROM orders INTO DUMPFILE '/tmp/dp-evil'",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SET SESSION TRANSACTION READ WRITE",
        "LOAD DATA INFILE '/tmp/x' INTO TABLE orders",
        "SELECT SLEEP(100)",
        "REPLACE INTO regions VALUES (1, 'x', 'y')",
    ],
}

ROWS = {
    "regions": [(1, "North", "USA"), (2, "South", "USA"), (3, "Asia Pacific", "China")],
    "orders": [(1, 1, "delivered", 12.5), (2, 1, "shipped", 3.0), (3, 3, "cancelled", 7.25)],
}


def seed(url: str) -> None:
    """Create the two test tables with a writable admin connection (the connector under test never writes)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("orders", "regions"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        if url.startswith("postgresql"):
            conn.exec_driver_sql("DROP SEQUENCE IF EXISTS order_seq")
            conn.exec_driver_sql("CREATE SEQUENCE order_seq")
        conn.exec_driver_sql(
            "CREATE TABLE regions (region_id INTEGER PRIMARY KEY, name VARCHAR(40), country VARCHAR(40))"
        )
        conn.exec_driver_sql(
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, region_id INTEGER REFERENCES regions(region_id), "
            "status VARCHAR(20), shipping_cost REAL)"
        )
        conn.execute(
            text("INSERT INTO regions VALUES (:a, :b, :c)"), [dict(zip("abc", r, strict=True)) for r in ROWS["regions"]]
        )
        conn.execute(
            text("INSERT INTO orders VALUES (:a, :b, :c, :d)"),
            [dict(zip("abcd", r, strict=True)) for r in ROWS["orders"]],
        )
    engine.dispose()


def snapshot(url: str) -> dict[str, Any]:
    """Every row of every table, read by an independent connection."""
    engine = create_engine(url)
    with engine.connect() as conn:
        from sqlalchemy import inspect

        tables = sorted(inspect(conn).get_table_names())
        state: dict[str, Any] = {"tables": tables}
        for t in tables:
            state[t] = sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t}"))
    engine.dispose()
    return state


async def assert_all_refused(connector: Connector, statements: list[str], strict: bool) -> None:
    for sql in statements:
        kinds: tuple[type[Exception], ...] = (UnsafeSQLError,) if strict else (UnsafeSQLError, SQLSyntaxError)
        with pytest.raises(kinds):
            await connector.run(sql)


async def assert_model_writes_refused(connector: Connector, scripted: ScriptedFactory) -> None:
    """The same writes coming out of a model, through the whole pipeline (fences, JSON, prose)."""
    replies = [
        "```sql\nDROP TABLE orders;\n```",
        '{"thoughts": "clean up", "sql": "DELETE FROM orders", "chart": "table"}',
        "Sure! Here it is: UPDATE orders SET status = 'x'; that should do it.",
        "```sql\nSELECT COUNT(*) FROM orders; DROP TABLE regions\n```",
        "{'sql': 'INSERT INTO regions VALUES (9, \"x\", \"y\")',}",
    ]
    manager = await scripted(replies)
    for style in ("completion", "chat"):
        for _ in replies:
            pipeline = Text2SQL(manager, "s", connector, options=Text2SQLOptions(style=style))  # type: ignore[arg-type]
            answer = await pipeline.answer("Drop the orders table and delete everything")
            if answer.result is not None:
                # Completion prompts stop generating at ';': only the first statement ever came back.
                assert style == "completion" and answer.sql == "SELECT COUNT(*) FROM orders", answer.to_dict()
                continue
            assert isinstance(answer.error, UnsafeSQLError), answer.to_dict()
            assert len(answer.attempts) == 1  # a write is never retried


@pytest.fixture
async def sqlite_copy(sample_db: Path, tmp_path: Path) -> AsyncIterator[Path]:
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(sample_db.read_bytes())  # noqa: ASYNC240
    yield copy


async def test_sqlite_refuses_every_write_and_the_file_is_unchanged(
    sqlite_copy: Path, scripted: ScriptedFactory
) -> None:
    before = sha256(sqlite_copy)
    connector = SQLAlchemyConnector(f"sqlite:///{sqlite_copy}")
    try:
        await assert_all_refused(connector, WRITES, strict=True)
        await assert_all_refused(connector, ENGINE_TRICKS["sqlite"], strict=False)
        await assert_model_writes_refused(connector, scripted)
        # The second lock: a write that skipped the guard still fails on the read-only connection.
        with pytest.raises(QueryError, match=r"readonly|read-only|read only"):
            connector._run_sync("DELETE FROM orders", 10, 5)
        assert (await connector.run("SELECT COUNT(*) FROM orders")).rows == [(1500,)]
    finally:
        await connector.close()
    assert sha256(sqlite_copy) == before
    assert not Path("/tmp/dp-evil.db").exists()  # noqa: ASYNC240


async def test_duckdb_file_and_csv_refuse_every_write(tmp_path: Path, scripted: ScriptedFactory) -> None:
    import duckdb

    path = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE regions (region_id INTEGER PRIMARY KEY, name VARCHAR, country VARCHAR)")
    con.execute(
        "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, region_id INTEGER, status VARCHAR, shipping_cost DOUBLE)"
    )
    con.executemany("INSERT INTO regions VALUES (?, ?, ?)", ROWS["regions"])
    con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", ROWS["orders"])
    con.close()
    before = sha256(path)
    connector = DuckDBConnector(database=path)
    try:
        await assert_all_refused(connector, WRITES, strict=True)
        await assert_all_refused(connector, ENGINE_TRICKS["duckdb"], strict=False)
        await assert_model_writes_refused(connector, scripted)
        with pytest.raises(QueryError, match=r"read-only|read only"):
            connector._run_sync("DELETE FROM orders", 10, 5)
    finally:
        await connector.close()
    assert sha256(path) == before

    csv = tmp_path / "orders.csv"
    csv.write_text("order_id,status\n1,delivered\n2,shipped\n")
    before_csv = sha256(csv)
    files = DuckDBConnector(files=[csv])
    try:
        await assert_all_refused(
            files, ["DROP TABLE orders", "DELETE FROM orders", "COPY orders TO '/tmp/dp-evil.csv'"], strict=True
        )
        # In memory, a write that skipped the guard is rolled back, and files stay out of reach.
        files._run_sync("SELECT 1", 10, 5)
        with pytest.raises(QueryError):
            files._run_sync(f"SELECT * FROM read_csv('{csv}')", 10, 5)
        assert (await files.run("SELECT COUNT(*) FROM orders")).rows == [(2,)]
    finally:
        await files.close()
    assert sha256(csv) == before_csv
    assert not Path("/tmp/dp-evil.csv").exists()  # noqa: ASYNC240


async def test_postgres_refuses_every_write_on_a_real_server(postgres_url: str, scripted: ScriptedFactory) -> None:
    seed(postgres_url)
    before = snapshot(postgres_url)
    connector = SQLAlchemyConnector(postgres_url)
    try:
        await assert_all_refused(connector, WRITES, strict=True)
        await assert_all_refused(connector, ENGINE_TRICKS["postgres"], strict=False)
        await assert_model_writes_refused(connector, scripted)
        # Server-side cursors only take queries, so the bypass writes from inside a SELECT.
        with pytest.raises(QueryError, match="read-only transaction"):
            connector._run_sync("SELECT nextval('order_seq')", 10, 5)
        result = await connector.run("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status")
        assert result.rows == [("cancelled", 1), ("delivered", 1), ("shipped", 1)]
        schema = {t.name: t for t in await connector.schema()}
        assert schema["orders"].foreign_keys[0].ref_table == "regions" and schema["orders"].row_count == 3
    finally:
        await connector.close()
    assert snapshot(postgres_url) == before


async def test_mariadb_refuses_every_write_on_a_real_server(mariadb_url: str, scripted: ScriptedFactory) -> None:
    seed(mariadb_url)
    before = snapshot(mariadb_url)
    connector = SQLAlchemyConnector(mariadb_url)
    try:
        await assert_all_refused(connector, WRITES, strict=True)
        await assert_all_refused(connector, ENGINE_TRICKS["mysql"], strict=False)
        await assert_model_writes_refused(connector, scripted)
        with pytest.raises(QueryError, match="READ ONLY"):
            connector._run_sync("DELETE FROM orders", 10, 5)
        result = await connector.run("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status")
        assert result.rows == [("cancelled", 1), ("delivered", 1), ("shipped", 1)]
    finally:
        await connector.close()
    assert snapshot(mariadb_url) == before


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb", "postgres", "mysql"])
def test_reads_pass_the_guard(dialect: str) -> None:
    for sql in [
        "SELECT 'drop table orders; delete' AS s",
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "SELECT a FROM t UNION ALL SELECT b FROM u",
        "SELECT COUNT(*) FROM orders WHERE status = 'DELETE'",
        "select 1 -- ; drop table x",
    ]:
        check_read_only(sql, dialect)


HEAVY = {
    # Each runs for many seconds unless the engine's own statement timeout stops it.
    "postgres": "SELECT COUNT(*) FROM generate_series(1, 200000000) AS a",
    "mysql": (
        "SELECT COUNT(*) FROM information_schema.columns a, information_schema.columns b, "
        "information_schema.columns c"
    ),
}


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_engine_side_timeout_on_real_servers(kind: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url" if kind == "postgres" else "mariadb_url")
    connector = SQLAlchemyConnector(url)
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeoutError, match=r"longer than 0\.5 s"):
            await connector.run(HEAVY[kind], timeout_s=0.5)
        assert time.monotonic() - started < 4, "the engine stopped it, not the 5 s client-side guard"
        ok = await connector.run("SELECT 1 AS one", timeout_s=0.5)  # the connection is usable afterwards
        assert ok.rows == [(1,)]
    finally:
        await connector.close()
