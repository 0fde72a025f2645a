"""Value retrieval: the values a question names, found in each data source's value index.

On the sample database (SQLite), a DuckDB file with product codes, a SQLite file with Chinese rows, a
generated table too large to read whole, real PostgreSQL and MariaDB servers, through the registry
that builds indexes in the background, the REST API and the CLI.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from datapilot.cli import app
from datapilot.core.config import ModelConfig, Settings
from datapilot.datasource import (
    Connector,
    DataSourceNotFoundError,
    DuckDBConnector,
    QueryError,
    QueryResult,
    SQLAlchemyConnector,
    TableInfo,
    check_read_only,
)
from datapilot.server.app import create_app
from datapilot.text2sql import ValueHit, ValueIndex, ValueIndexes, ValueIndexOptions
from datapilot.text2sql._values import (
    MIN_SCORE,
    distinct_values_sql,
    is_key_like,
    is_text_type,
    normalize,
)

# Questions that name no stored value: none may come back with a hit (measured: the highest score any
# of them reaches on the sample database is 0.55, "delivered" against the company "River Deli").
NO_VALUE_QUESTIONS = [
    "How many orders are there?",
    "What is the total shipping cost?",
    "total sales by region",
    "What is the average salary?",
    "top 5 products by revenue",
    "How many employees were hired in 2020?",
    "Which category has the most products?",
    "What is the most popular product?",
    "How many customers placed more than 10 orders last year?",
    "list the names of all suppliers",
]


class Recording:
    """A connector that records every query and its row count; ``gate`` holds ``schema`` back until set,
    so a build stays visibly under way."""

    def __init__(self, inner: Connector, gate: asyncio.Event | None = None) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.gate = gate
        self.reads: list[tuple[str, int]] = []

    async def tables(self) -> list[str]:
        return await self.inner.tables()

    async def schema(self, tables: list[str] | None = None) -> list[TableInfo]:
        if self.gate is not None:
            await self.gate.wait()
        return await self.inner.schema(tables)

    async def run(self, sql: str, limit: int = 1000, timeout_s: float = 30.0) -> QueryResult:
        result = await self.inner.run(sql, limit, timeout_s)
        self.reads.append((sql, len(result.rows)))
        return result

    async def close(self) -> None:
        await self.inner.close()


class Unreachable:
    """A connector whose database is down."""

    dialect = "postgres"

    async def tables(self) -> list[str]:
        raise QueryError("could not connect to the database: connection refused", code="connection_failed")

    async def schema(self, tables: list[str] | None = None) -> list[TableInfo]:
        return await self.tables()  # type: ignore[return-value]

    async def run(self, sql: str, limit: int = 1000, timeout_s: float = 30.0) -> QueryResult:
        await self.tables()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


@pytest.fixture
async def sample(sample_db: Path) -> AsyncIterator[SQLAlchemyConnector]:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    yield connector
    await connector.close()


@pytest.fixture
async def sample_index(sample: SQLAlchemyConnector) -> ValueIndex:
    return await ValueIndex.build(sample)


def fullwidth(text: str) -> str:
    """ASCII letters, digits and signs as their full-width forms (\uff01-\uff5e), as East Asian input writes them."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def first(hits: list[ValueHit]) -> tuple[str, str, str]:
    assert hits, "no hit"
    return hits[0].table, hits[0].column, hits[0].value


# --- the sample database -------------------------------------------------------------------------------


async def test_sample_database_exact_lowercase_and_width_variants(sample_index: ValueIndex) -> None:
    assert sample_index.columns == 14  # text columns with letters in them; keys, numbers and dates skipped
    assert sample_index.dialect == "sqlite" and sample_index.values == 350
    for question in (
        "How many customers are in Shanghai?",
        "how many customers in shanghai",
        "customers in SHANGHAI",
        f"customers in {fullwidth('SHANGHAI')}",
        'customers in "Shanghai"',
    ):
        hits = sample_index.lookup(question)
        assert first(hits) == ("customers", "city", "Shanghai"), question
        assert hits[0].score == 1.0 and normalize(hits[0].matched) == "shanghai"
    assert first(sample_index.lookup("How many orders were cancelled?")) == ("orders", "status", "cancelled")
    assert first(sample_index.lookup("Which customers are in the Online segment?")) == (
        "customers",
        "segment",
        "Online",
    )
    # An accent-free spelling finds the accented name.
    assert first(sample_index.lookup("employees named Muller")) == ("employees", "last_name", "Müller")


async def test_sample_database_partial_values(sample_index: ValueIndex) -> None:
    cheddar = sample_index.lookup("Total sales of Cheddar")
    assert [(h.column, h.value, h.matched) for h in cheddar] == [("name", "Cheddar Cheese", "Cheddar")]
    assert MIN_SCORE <= cheddar[0].score < 1.0
    assert first(sample_index.lookup("list the products of alpine")) == ("suppliers", "name", "Alpine Dairy")
    pacific = {(h.table, h.value) for h in sample_index.lookup("orders from Pacific")}
    assert pacific == {("regions", "Asia Pacific"), ("suppliers", "Pacific Beverages")}
    beans = sample_index.lookup("total revenue of coffee beans")
    assert [(h.value, h.matched) for h in beans] == [("Black Coffee Beans", "coffee beans")]
    # Two values named at once, the exact ones first; one hit per (table, column, value).
    both = sample_index.lookup("Which products are sold by Alpine Dairy?", k=10)
    assert [(h.table, h.value, h.score) for h in both] == [
        ("suppliers", "Alpine Dairy", 1.0),
        ("products", "Dairy", 1.0),
    ]
    green = sample_index.lookup("Show me Green Tea orders", k=10)
    assert first(green) == ("products", "name", "Green Tea")
    assert len({(h.table, h.column, h.value) for h in green}) == len(green)
    assert [h.score for h in green] == sorted((h.score for h in green), reverse=True)
    # "Sales Representatives" is most of "Sales Representative"; "sales" alone is a measure, not a title.
    reps = sample_index.lookup("How many Sales Representatives are there?")
    assert [h.value for h in reps] == ["Sales Representative", "Senior Sales Representative"]


@pytest.mark.parametrize("question", NO_VALUE_QUESTIONS)
async def test_no_hit_for_a_question_without_values(sample_index: ValueIndex, question: str) -> None:
    assert sample_index.lookup(question) == []
    assert sample_index.hints(question) == []


async def test_hints_are_sql_conditions(sample_index: ValueIndex) -> None:
    assert sample_index.hints("How many customers are in Shanghai?", k=1) == ["customers.city = 'Shanghai'"]
    index = ValueIndex([("people", "last name", "O'Brien"), ("Order Details", "city", "Xi'an")], dialect="postgres")
    assert index.hints("orders by O'Brien") == ["people.\"last name\" = 'O''Brien'"]
    assert index.hints("orders shipped to Xi'an") == ["\"Order Details\".city = 'Xi''an'"]
    hit = index.lookup("O'Brien")[0]
    assert hit.to_dict() == {
        "table": "people",
        "column": "last name",
        "value": "O'Brien",
        "score": 1.0,
        "matched": "O'Brien",
    }
    assert hit.condition("mysql") == "people.`last name` = 'O''Brien'"


# --- DuckDB: product codes, column selection ------------------------------------------------------------


@pytest.fixture
async def duck(tmp_path: Path) -> AsyncIterator[DuckDBConnector]:
    import duckdb

    path = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE products (product_id INTEGER, sku_id VARCHAR, code VARCHAR, name VARCHAR, "
        "price DOUBLE, launched DATE, tags VARCHAR[], notes VARCHAR)"
    )
    rows = [
        (1, "a1b2", "VP-100", "Voltra Phone", 699.0, "2024-03-01", ["phone"], "x" * 120),
        (2, "c3d4", "VP-200", "Voltra Pad", 899.0, "2024-05-01", ["tablet"], "flagship tablet"),
        (3, "e5f6", "NX-7", "Nexa Watch", 299.0, "2023-11-15", [], None),
        (4, "g7h8", "HB-42", "Helio Buds", 149.0, "2023-09-09", [], None),
    ]
    con.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()
    connector = DuckDBConnector(database=path)
    yield connector
    await connector.close()


async def test_duckdb_product_codes_and_partial_names(duck: DuckDBConnector) -> None:
    index = await ValueIndex.build(duck)
    # product_id (a number), sku_id (a key by its name), price, launched and tags (a list) are skipped;
    # the 120-character note is too long to be a value.
    assert index.summary()["columns"] == 3 and index.values == 9
    assert first(index.lookup("How many VP-100 did we sell?")) == ("products", "code", "VP-100")
    compact = index.lookup("vp100 sales this year")
    assert first(compact) == ("products", "code", "VP-100") and compact[0].score == pytest.approx(0.95)
    assert first(index.lookup("revenue of NX-7")) == ("products", "code", "NX-7")
    voltra = index.lookup("How many Voltra were sold?")
    assert {h.value for h in voltra} == {"Voltra Phone", "Voltra Pad"}
    assert all(MIN_SCORE <= h.score < 1 and h.matched == "Voltra" for h in voltra)
    assert index.lookup("how many VP were sold") == []  # two letters name no code in part
    assert index.hints("VP-100 orders") == ["products.code = 'VP-100'"]


# --- Chinese values -------------------------------------------------------------------------------------


@pytest.fixture
async def chinese(tmp_path: Path) -> AsyncIterator[SQLAlchemyConnector]:
    path = tmp_path / "cn.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT, level TEXT)")
    con.executemany(
        "INSERT INTO customers (name, city, level) VALUES (?, ?, ?)",
        [
            ("上海浦东贸易有限公司", "上海", "金牌"),
            ("北京朝阳食品公司", "北京", "银牌"),
            ("深圳南山电子科技", "深圳", "金牌"),
            ("广州天河百货", "广州", "铜牌"),
            ("Pearl River Trading", "广州", "银牌"),
        ],
    )
    con.commit()
    con.close()
    connector = SQLAlchemyConnector(f"sqlite:///{path}")
    yield connector
    await connector.close()


async def test_chinese_values_inside_chinese_questions(chinese: SQLAlchemyConnector) -> None:
    index = await ValueIndex.build(chinese)
    shanghai = index.lookup("上海有多少客户")
    assert (first(shanghai), shanghai[0].score, shanghai[0].matched) == (("customers", "city", "上海"), 1.0, "上海")
    assert first(index.lookup("北京的客户有哪些\uff1f")) == ("customers", "city", "北京")
    assert {h.value for h in index.lookup("金牌客户有多少个")} == {"金牌"}
    shenzhen = index.lookup("深圳南山电子的订单总额")  # the city exactly, the company in part
    assert [(h.column, h.value, h.matched) for h in shenzhen] == [
        ("city", "深圳", "深圳"),
        ("name", "深圳南山电子科技", "深圳南山电子"),
    ]
    assert MIN_SCORE <= shenzhen[1].score < 1
    assert index.lookup("有多少客户") == [] and index.lookup("平均每个客户的订单数量是多少") == []
    # Mixed: an English name in a Chinese question, and a Chinese value in an English one.
    assert first(index.lookup("Pearl River Trading的订单")) == ("customers", "name", "Pearl River Trading")
    assert first(index.lookup("How many customers are in 广州?")) == ("customers", "city", "广州")


# --- bounded reads: sampling, per-column and column limits ---------------------------------------------


@pytest.fixture
async def big(tmp_path: Path) -> AsyncIterator[Recording]:
    path = tmp_path / "big.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE events (event_id INTEGER PRIMARY KEY, label TEXT, city TEXT, note TEXT)")
    rng = random.Random(5)
    cities = ["Lyon", "Porto", "Graz", "Turku"]
    rows = [(f"Label {i:06d}", rng.choice(cities), "ok") for i in range(60_000)]
    rows += [(f"Late {i}", "Zanzibar", "late") for i in range(200)]  # only after the sampled rows
    con.executemany("INSERT INTO events (label, city, note) VALUES (?, ?, ?)", rows)
    con.execute("CREATE TABLE tiny (name TEXT)")
    con.executemany("INSERT INTO tiny VALUES (?)", [("Alpha",), ("Beta",)])
    con.commit()
    con.close()
    connector = Recording(SQLAlchemyConnector(f"sqlite:///{path}"))
    yield connector
    await connector.close()


async def test_large_tables_are_sampled_and_reads_bounded(big: Recording) -> None:
    options = ValueIndexOptions(sample_rows=5_000, max_per_column=300)
    seen: list[tuple[int, int, str]] = []
    index = await ValueIndex.build(big, options=options, progress=lambda *step: seen.append(step))
    assert [s[2] for s in seen] == ["events.label", "events.city", "events.note", "tiny.name"]
    assert [s[:2] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # Every read of the big table names its sample; the small one is read whole.
    events = [sql for sql, _ in big.reads if '"events"' in sql]
    assert events and all("LIMIT 5000) AS s" in sql for sql in events)
    assert all("LIMIT 5000" not in sql for sql, _ in big.reads if '"tiny"' in sql)
    assert all(rows <= 300 for _, rows in big.reads)
    assert index.rows_read == sum(rows for _, rows in big.reads) <= 4 * 300
    assert index.values <= 300 + 4 + 1 + 2 and index.truncated == ["events.label"]
    assert index.lookup("events in Zanzibar") == []  # past the sample
    assert first(index.lookup("events in Graz")) == ("events", "city", "Graz")
    # At most max_columns columns are read.
    big.reads.clear()
    few = await ValueIndex.build(big, options=ValueIndexOptions(max_columns=2, sample_rows=5_000))
    assert len(big.reads) == 2 and few.columns == 2


def test_sql_is_written_per_dialect() -> None:
    expected = {
        "sqlite": 'SELECT "City Name" AS v, COUNT(*) AS n FROM (SELECT "City Name" FROM "Order ""Lines""" '
        'WHERE "City Name" IS NOT NULL LIMIT 100) AS s GROUP BY "City Name" ORDER BY n DESC, v LIMIT 20',
        "duckdb": 'SELECT "City Name" AS v, COUNT(*) AS n FROM (SELECT "City Name" FROM "Order ""Lines""" '
        'WHERE "City Name" IS NOT NULL LIMIT 100) AS s GROUP BY "City Name" ORDER BY n DESC, v LIMIT 20',
        "postgres": 'SELECT "City Name" AS v, COUNT(*) AS n FROM (SELECT "City Name" FROM "Order ""Lines""" '
        'WHERE "City Name" IS NOT NULL LIMIT 100) AS s GROUP BY "City Name" ORDER BY n DESC, v LIMIT 20',
        "mysql": 'SELECT `City Name` AS v, COUNT(*) AS n FROM (SELECT `City Name` FROM `Order "Lines"` '
        "WHERE `City Name` IS NOT NULL LIMIT 100) AS s GROUP BY `City Name` ORDER BY n DESC, v LIMIT 20",
    }
    for dialect, sql in expected.items():
        written = distinct_values_sql('Order "Lines"', "City Name", dialect, limit=20, sample_rows=100)
        assert written == sql, dialect
        check_read_only(written, dialect)  # the connectors' guard lets it through
    whole = distinct_values_sql("tiny", "name", "mysql", limit=5)
    assert whole == "SELECT `name` AS v, COUNT(*) AS n FROM `tiny` WHERE `name` IS NOT NULL GROUP BY `name` " + (
        "ORDER BY n DESC, v LIMIT 5"
    )


def test_which_columns_hold_values() -> None:
    for t in ("TEXT", "VARCHAR(40)", "character varying(20)", "NVARCHAR(10)", "ENUM('a','b')", "CHAR(3)", "", "NULL"):
        assert is_text_type(t), t
    for t in ("INTEGER", "REAL", "NUMERIC(10, 2)", "DATE", "TIMESTAMP", "BLOB", "BYTEA", "VARCHAR[]", "JSON"):
        assert not is_text_type(t), t
    for name in ("id", "customer_id", "CustomerID", "orderId", "sku_id", "uuid", "productid"):
        assert is_key_like(name), name
    for name in ("paid", "valid", "name", "code", "product_code", "fluid", "city"):
        assert not is_key_like(name), name


def test_normalisation() -> None:
    assert normalize(fullwidth("VP-100")) == normalize("vp-100") == "vp 100"
    assert normalize("  Müller & Söhne ") == "muller sohne"
    assert normalize("ｼｬﾝﾊｲ") == "シャンハイ"  # half-width kana widened, its marks kept
    assert normalize("上海\uff0c北京") == "上海 北京"


async def test_lookup_is_fast_on_100k_values() -> None:
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ra", "ven", "tor", "sa", "li", "qu", "zen", "dor", "ex", "pha", "no", "vi"]
    kinds = ["Phone", "Tablet", "Store", "Trading", "Foods", "Market", "Bakery", "Supplies", "Labs", "Cafe"]

    def word() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))).capitalize()

    values: set[str] = set()
    while len(values) < 100_000:
        r = rng.random()
        if r < 0.5:
            values.add(f"{word()} {rng.choice(kinds)}")
        elif r < 0.7:
            values.add(f"{word()} {word()}")
        elif r < 0.85:
            values.add(f"{rng.choice('ABCDEFGHKLMNPRS')}{rng.choice('ABCDEFGHKLMNPRS')}-{rng.randint(100, 9999)}")
        else:
            values.add(
                "".join(rng.choice("上海北京广州深圳杭州电子科技贸易食品公司集团") for _ in range(rng.randint(2, 8)))
            )
    ordered = sorted(values)
    index = await asyncio.to_thread(ValueIndex, [("t", f"c{i % 9}", v) for i, v in enumerate(ordered)])
    first_words = Counter(w for v in ordered for w in v.split())
    named = next(v for v in ordered if v.endswith(" Phone") and first_words[v.split()[0]] == 1)
    code = next(v for v in ordered if "-" in v)
    questions = [
        "How many customers are in Shanghai?",
        f"How many {named.split()[0]} were sold in 2024?",
        f"orders for {code} last month",
        "上海电子科技有限公司的订单有多少",
        "Which stores in the Market group had the highest sales per month in 2023 compared to 2022?",
    ]
    assert named in {h.value for h in index.lookup(questions[1])}
    assert first(index.lookup(f"revenue of {named} in May"))[2] == named
    assert first(index.lookup(questions[2]))[2] == code
    timings = []
    for q in questions:
        for _ in range(20):
            started = time.perf_counter()
            index.lookup(q)
            timings.append(time.perf_counter() - started)
    # About 1-3 ms each on a quiet two-core machine; the bound leaves room for a busy one.
    assert statistics.median(timings) < 0.025


# --- real PostgreSQL and MariaDB servers ----------------------------------------------------------------


def _seed(url: str, dialect: str) -> None:
    from datapilot.text2sql._values import quote_identifier as q

    engine = create_engine(url)
    charset = " DEFAULT CHARSET=utf8mb4" if dialect == "mysql" else ""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q('vx_products', dialect)}")
        conn.exec_driver_sql(
            f"CREATE TABLE {q('vx_products', dialect)} (product_id INTEGER PRIMARY KEY, {q('Code', dialect)} "
            f"VARCHAR(20), name VARCHAR(80), city VARCHAR(40), price NUMERIC(10, 2), launched DATE){charset}"
        )
        rows = [
            {"i": i, "c": f"VP-{100 + i}", "n": name, "city": city, "p": 10.5 + i, "d": "2024-01-02"}
            for i, (name, city) in enumerate(
                [("Voltra Phone", "上海"), ("Voltra Pad", "Berlin"), ("Nexa Watch", "O'Fallon")] * 400
            )
        ]
        conn.execute(text(f"INSERT INTO {q('vx_products', dialect)} VALUES (:i, :c, :n, :city, :p, :d)"), rows)
    engine.dispose()


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
async def test_real_servers(kind: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url" if kind == "postgres" else "mariadb_url")
    connector = SQLAlchemyConnector(url)
    _seed(url, connector.dialect)
    recording = Recording(connector)
    try:
        index = await ValueIndex.build(recording, options=ValueIndexOptions(sample_rows=600, max_per_column=500))
        ours = [(sql, rows) for sql, rows in recording.reads if "vx_products" in sql]
        assert len(ours) == 3 and all("LIMIT 600) AS s" in sql for sql, _ in ours)  # Code, name, city
        assert first(index.lookup("sales of VP-105 in March")) == ("vx_products", "Code", "VP-105")
        assert index.hints("VP-105 sales") == [
            "vx_products.\"Code\" = 'VP-105'" if kind == "postgres" else "vx_products.`Code` = 'VP-105'"
        ]
        assert first(index.lookup("上海有多少订单")) == ("vx_products", "city", "上海")
        assert {h.value for h in index.lookup("Voltra revenue")} == {"Voltra Phone", "Voltra Pad"}
        assert first(index.lookup("shipped to o'fallon")) == ("vx_products", "city", "O'Fallon")
    finally:
        await recording.close()


# --- the registry ---------------------------------------------------------------------------------------


async def test_registry_builds_in_the_background_and_refreshes(sample: SQLAlchemyConnector) -> None:
    gate = asyncio.Event()
    connector = Recording(sample, gate)
    indexes = ValueIndexes()
    try:
        status = indexes.ensure("sample", connector)
        assert status["state"] == "building" and status["values"] == 0 and status["error"] is None
        await asyncio.sleep(0.05)
        assert indexes.get("sample") is None and indexes.status("sample")["state"] == "building"  # type: ignore[index]
        assert indexes.ensure("sample", connector)["state"] == "building"  # no second build
        gate.set()
        index = await indexes.wait("sample")
        assert index is not None and indexes.get("sample") is index
        ready = indexes.status("sample")
        assert ready is not None and ready["state"] == "ready"
        assert ready["columns"] == 14 and ready["values"] == 350 and ready["built_at"] == index.built_at
        assert ready["progress"] == {"done": 17, "total": 17}  # 17 text columns read; 3 hold only dates
        assert first(index.lookup("customers in Shanghai")) == ("customers", "city", "Shanghai")
        reads = len(connector.reads)

        gate.clear()
        refreshing = indexes.refresh("sample", connector)
        assert refreshing["state"] == "building" and refreshing["values"] == 350  # the old one serves meanwhile
        assert indexes.get("sample") is index
        gate.set()
        fresh = await indexes.wait("sample")
        assert fresh is not None and fresh is not index and len(connector.reads) == 2 * reads
        assert indexes.status("sample")["state"] == "ready"  # type: ignore[index]

        indexes.drop("sample")
        assert indexes.get("sample") is None and indexes.status("sample") is None
    finally:
        await indexes.close()


async def test_registry_reports_failures(sample: SQLAlchemyConnector) -> None:
    indexes = ValueIndexes()
    try:
        indexes.ensure("down", Unreachable())

        async def missing() -> Connector:
            raise DataSourceNotFoundError("no data source named 'gone'")

        indexes.ensure("gone", missing)
        assert await indexes.wait("down") is None and await indexes.wait("gone") is None
        down = indexes.status("down")
        assert down is not None and down["state"] == "failed"
        assert down["error"] == "could not connect to the database: connection refused"
        assert indexes.status("gone")["error"] == "no data source named 'gone'"  # type: ignore[index]
        assert indexes.ensure("down", Unreachable())["state"] == "failed"  # ensure does not retry
        # A refresh retries, and a build that succeeds clears the error.
        indexes.refresh("down", sample)
        assert await indexes.wait("down") is not None
        assert indexes.status("down")["state"] == "ready" and indexes.status("down")["error"] is None  # type: ignore[index]
    finally:
        await indexes.close()


async def test_registry_close_cancels_builds(sample: SQLAlchemyConnector) -> None:
    indexes = ValueIndexes()
    indexes.ensure("sample", Recording(sample, asyncio.Event()))  # never opened
    await asyncio.sleep(0)
    await indexes.close()
    assert indexes.status("sample") is None


# --- REST API and CLI -----------------------------------------------------------------------------------


def _ready(client: TestClient, name: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get(f"/api/datasources/{name}/values")
        assert status.status_code == 200, status.text
        body: dict[str, Any] = status.json()
        if body["state"] != "building" or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_rest_value_endpoints(tmp_path: Path, sample_db: Path) -> None:
    settings = Settings(home=tmp_path / "home", models=[ModelConfig(name="s", backend="scripted")])
    with TestClient(create_app(settings)) as client:
        first_status = client.get("/api/datasources/sample/values").json()
        assert first_status["state"] in ("building", "ready") and first_status["name"] == "sample"
        ready = _ready(client, "sample")
        assert ready["state"] == "ready" and ready["columns"] == 14 and ready["values"] == 350
        assert ready["error"] is None and ready["built_at"] > 0

        found = client.get("/api/datasources/sample/values/search", params={"q": "customers in shanghai", "k": 1})
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["state"] == "ready" and body["hints"] == ["customers.city = 'Shanghai'"]
        assert body["hits"] == [
            {"table": "customers", "column": "city", "value": "Shanghai", "score": 1.0, "matched": "shanghai"}
        ]
        assert (
            client.get("/api/datasources/sample/values/search", params={"q": "How many orders?"}).json()["hits"] == []
        )

        refreshed = client.post("/api/datasources/sample/values/refresh")
        assert refreshed.status_code == 200 and refreshed.json()["state"] == "building"
        assert _ready(client, "sample")["built_at"] > ready["built_at"]

        for method, path in (
            ("GET", "/api/datasources/nope/values"),
            ("POST", "/api/datasources/nope/values/refresh"),
            ("GET", "/api/datasources/nope/values/search?q=x"),
        ):
            missing = client.request(method, path)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "datasource_not_found"
        assert client.get("/api/datasources/sample/values/search", params={"q": ""}).status_code in (400, 422)

        # A new source (an upload, a database file) gets its index built without being asked.
        upload = client.post(
            "/api/datasources/upload?filename=gadgets.csv&name=gadgets",
            content=b"code,name,price\nVP-100,Voltra Phone,699\nNX-7,Nexa Watch,299\n",
        )
        assert upload.status_code == 200, upload.text
        assert _ready(client, "gadgets")["values"] == 4
        hits = client.get("/api/datasources/gadgets/values/search", params={"q": "voltra sales"}).json()["hits"]
        assert [(h["table"], h["column"], h["value"]) for h in hits] == [("gadgets", "name", "Voltra Phone")]

        copy = tmp_path / "copy.sqlite"
        copy.write_bytes(sample_db.read_bytes())
        added = client.post("/api/datasources", json={"name": "copy", "kind": "sqlite", "path": str(copy)})
        assert added.status_code == 200, added.text
        assert _ready(client, "copy")["state"] == "ready"
        assert client.delete("/api/datasources/copy").status_code == 200
        assert client.get("/api/datasources/copy/values").status_code == 404


def test_cli_db_values(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    done = runner.invoke(app, ["db", "values", "sample", "How many customers are in Shanghai?", "--json", *home])
    assert done.exit_code == 0, done.output
    body = json_of(done.stdout)
    assert body["columns"] == 14 and body["values"] == 350 and body["rows_read"] > 0
    assert body["hits"][0] == {
        "table": "customers",
        "column": "city",
        "value": "Shanghai",
        "score": 1.0,
        "matched": "Shanghai",
    }
    assert body["hints"][0] == "customers.city = 'Shanghai'"

    shown = runner.invoke(app, ["db", "values", "sample", "Total sales of Cheddar", *home])
    assert shown.exit_code == 0, shown.output
    assert "350 values in 14 columns" in shown.stdout and "Cheddar Cheese" in shown.stdout
    counts = runner.invoke(app, ["db", "values", "sample", "--json", *home])
    assert counts.exit_code == 0 and "hits" not in json_of(counts.stdout)
    none = runner.invoke(app, ["db", "values", "sample", "How many orders are there?", *home])
    assert none.exit_code == 0 and "no stored value" in none.stdout
    assert runner.invoke(app, ["db", "values", "nope", *home]).exit_code != 0


def json_of(output: str) -> dict[str, Any]:
    import json

    parsed: dict[str, Any] = json.loads(output)
    return parsed
