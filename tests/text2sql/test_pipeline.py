"""The text-to-SQL pipeline's logic on the scripted model: extraction, JSON repair, transpilation,
schema linking, the bounded correction loop; connectors' schema, limits and timeouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datapilot.cache import HashEmbedder
from datapilot.datasource import (
    DataSourceConfig,
    DataSources,
    QueryTimeoutError,
    SQLAlchemyConnector,
    clean_names,
)
from datapilot.text2sql import (
    SchemaLinker,
    SQLAnswer,
    Text2SQL,
    Text2SQLOptions,
    completion_prompt,
    extract_sql,
    parse_answer,
    parse_answer_list,
    repair_json,
    transpile,
)
from datapilot.text2sql._eval import run_sqlite
from datapilot.text2sql._shots import example_pool, pick_examples
from tests.text2sql.conftest import ScriptedFactory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```sql\nSELECT name FROM products;\n```", "SELECT name FROM products"),
        ("Here you go:\n```\nSELECT 1\n```\nHope it helps", "SELECT 1"),
        ('{"thoughts": "count", "sql": "SELECT COUNT(*) FROM orders", "chart": "x"}', "SELECT COUNT(*) FROM orders"),
        ("```json\n{'sql': 'SELECT a FROM t', chart: 'bar',}\n```", "SELECT a FROM t"),
        ("The query is SELECT city FROM customers WHERE segment = 'Retail'; it lists cities.",
         "SELECT city FROM customers WHERE segment = 'Retail'"),
        ('{"sql": "SELECT a,\n b FROM t", "thoughts": "multi-line"', "SELECT a,\n b FROM t"),
        ("I don't know.", None),
    ],
)  # fmt: skip
def test_sql_is_extracted_from_fences_json_and_prose(text: str, expected: str | None) -> None:
    assert extract_sql(text) == expected


def test_a_completion_continues_the_open_select() -> None:
    assert extract_sql(" name, price FROM products ORDER BY price", prefix="SELECT ") == (
        "SELECT name, price FROM products ORDER BY price"
    )
    # A model that restarts the query is read from its own SELECT.
    assert extract_sql("SELECT COUNT(*) FROM orders", prefix="SELECT ") == "SELECT COUNT(*) FROM orders"


def test_malformed_json_answers_are_repaired() -> None:
    broken = [
        "{'thoughts': 'use orders', 'sql': 'SELECT COUNT(*) FROM orders', 'chart': 'table',}",
        '{thoughts: "x", sql: "SELECT 1", chart: None}',
        '```json\n{"thoughts": "a \\"quoted\\" word", "sql": "SELECT name FROM t WHERE a = \'x\'"',
        'Sure! {"sql": "SELECT 1", "chart": "bar"} and that is all {',
        '{"sql": "SELECT a\nFROM t", "chart": "line"}',
    ]
    sqls = [parse_answer(b).sql for b in broken]
    assert sqls == [
        "SELECT COUNT(*) FROM orders",
        "SELECT 1",
        "SELECT name FROM t WHERE a = 'x'",
        "SELECT 1",
        "SELECT a\nFROM t",
    ]
    assert parse_answer(broken[0]).repaired and parse_answer(broken[0]).chart == "table"
    assert parse_answer('{"sql": "SELECT 1"}').repaired is False
    assert repair_json("{'a': True, 'b': [1, 2,],}") == '{"a": true, "b": [1, 2]}'
    many = parse_answer_list('[{"title": "A", "sql": "SELECT 1", "chart": "bar"}, {title: "B", sql: "SELECT 2",}')
    assert [(a.title, a.sql) for a in many] == [("A", "SELECT 1"), ("B", "SELECT 2")]


def test_transpile_rewrites_for_the_target_dialect() -> None:
    assert transpile("SELECT TOP 5 name FROM products", "sqlite") == "SELECT name FROM products LIMIT 5"
    assert transpile("SELECT `name` FROM products", "postgres", source="mysql") == 'SELECT "name" FROM products'
    assert transpile("SELECT name FROM products", "sqlite") == "SELECT name FROM products"
    assert transpile("not sql at all (", "sqlite") == "not sql at all ("


async def test_correction_loop_feeds_the_error_back_and_is_bounded(sample_db: Path, scripted: ScriptedFactory) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    try:
        fixed = await scripted([
            "```sql\nSELECT nme FROM products\n```",
            "```sql\nSELECT name FROM prodcts\n```",
            "```sql\nSELECT name FROM products WHERE category = 'Dairy'\n```",
        ])  # fmt: skip
        answer = await Text2SQL(fixed, "s", connector).answer("Which dairy products are there?")
        assert answer.ok and len(answer.result.rows) == 6 if answer.result else False
        assert [a.code for a in answer.attempts] == ["query_failed", "query_failed", None]
        assert "no such column: nme" in (answer.attempts[0].error or "")

        never = await scripted(["SELECT nme FROM products", "I am not sure."], name="s2")
        options = Text2SQLOptions(max_corrections=3)
        answer = await Text2SQL(never, "s2", connector, options=options).answer("names?")
        assert not answer.ok and len(answer.attempts) == 4  # the first try and three corrections
        assert answer.attempts[1].code == "no_sql" and answer.error is not None
    finally:
        await connector.close()


async def test_the_correction_prompt_carries_the_database_error(sample_db: Path, scripted: ScriptedFactory) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    seen: list[str] = []
    manager = await scripted(["SELECT nme FROM products", "SELECT name FROM products"])
    generate = manager.generate

    async def spy(request):  # type: ignore[no-untyped-def]
        seen.append(request.prompt or "")
        return await generate(request)

    manager.generate = spy  # type: ignore[method-assign]
    try:
        answer = await Text2SQL(manager, "s", connector).answer("List product names")
        assert answer.ok
        assert seen[0].endswith("-- Question: List product names\nSELECT")
        assert "-- That query failed: the database refused the query: no such column: nme" in seen[1]
        assert seen[1].endswith("-- Corrected query:\nSELECT")
    finally:
        await connector.close()


async def test_chat_style_reads_json_thoughts_and_chart(sample_db: Path, scripted: ScriptedFactory) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    manager = await scripted(
        [
            "{'thoughts': 'group by segment', 'sql': 'SELECT segment, COUNT(*) FROM customers GROUP BY segment', "
            "chart: 'pie',}"
        ]
    )
    try:
        answer = await Text2SQL(manager, "s", connector, options=Text2SQLOptions(style="chat")).answer(
            "Customers by segment"
        )
        assert answer.ok and answer.chart == "pie" and answer.thoughts == "group by segment"
    finally:
        await connector.close()


async def test_schema_introspection_and_prompt(sample_db: Path) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    try:
        tables = {t.name: t for t in await connector.schema()}
        assert set(tables) == {"regions", "employees", "customers", "suppliers", "products", "orders", "order_items"}
        orders = tables["orders"]
        assert orders.row_count == 1500
        assert {(f.ref_table, f.columns[0]) for f in orders.foreign_keys} == {
            ("customers", "customer_id"),
            ("employees", "employee_id"),
        }
        status = next(c for c in orders.columns if c.name == "status")
        assert status.comment == "shipped, delivered, cancelled, pending" and status.samples
        assert next(c for c in orders.columns if c.name == "order_id").primary_key
        prompt = completion_prompt("How many orders?", list(tables.values()), "sqlite")
        assert "CREATE TABLE orders (" in prompt and "-- Question: How many orders?\nSELECT" in prompt
    finally:
        await connector.close()


async def test_row_limit_and_timeout(sample_db: Path) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    try:
        result = await connector.run("SELECT * FROM order_items", limit=10)
        assert len(result.rows) == 10 and result.truncated
        result = await connector.run("SELECT * FROM regions LIMIT 3", limit=10)
        assert len(result.rows) == 3 and not result.truncated
        with pytest.raises(QueryTimeoutError):
            await connector.run(
                "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r", timeout_s=0.3
            )
    finally:
        await connector.close()


async def test_linking_picks_relevant_tables_on_a_large_schema(sample_db: Path) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    try:
        tables = await connector.schema()
        linker = SchemaLinker(HashEmbedder(), top_k=2)
        chosen = [t.name for t in await linker.select("table products: name, category, unit_price", tables)]
        assert chosen[0] == "products" and "suppliers" in chosen  # the foreign key brings its table along
        assert len(chosen) <= 4
        lexical = SchemaLinker(None, top_k=1)
        assert (await lexical.select("list the employees", tables))[0].name == "employees"
        assert await SchemaLinker(None, top_k=10).select("anything", tables) == tables
        vectors = await HashEmbedder().embed(["a"])
        assert np.isclose(np.linalg.norm(vectors[0]), 1.0)
    finally:
        await connector.close()


async def test_files_load_with_clean_column_names(tmp_path: Path, sources: DataSources) -> None:
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert clean_names(["Order Date ", "Amount ($)", "amount", "Région", "", "2024 Sales", "销售额"]) == [
        "order_date", "amount", "amount_2", "region", "column_5", "c_2024_sales", "销售额",
    ]  # fmt: skip
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [["Product Name", "Units Sold", "Unit Price"], ["Tea", 10, 2.5], ["Coffee", 4, 7.0], [None, None, None]]:
        sheet.append(row)
    book.save(tmp_path / "Sales Report.xlsx")
    pq.write_table(pa.table({"City": ["Paris", "Rome"], "Pop (M)": [2.1, 2.8]}), tmp_path / "cities.parquet")
    (tmp_path / "people.csv").write_text("Full Name,Age\nAda,36\nAlan,41\n")
    config = await sources.add(
        DataSourceConfig(
            name="files",
            kind="files",
            files=[str(tmp_path / "Sales Report.xlsx"), str(tmp_path / "cities.parquet"), str(tmp_path / "people.csv")],
        )
    )
    assert config.kind == "files"
    connector = await sources.connector("files")
    tables = {t.name: t for t in await connector.schema()}
    assert set(tables) == {"sales_report", "cities", "people"}
    assert [c.name for c in tables["sales_report"].columns] == ["product_name", "units_sold", "unit_price"]
    assert tables["sales_report"].row_count == 2
    result = await connector.run(
        "SELECT product_name, units_sold * unit_price AS revenue FROM sales_report ORDER BY 2 DESC"
    )
    assert result.rows == [("Coffee", 28.0), ("Tea", 25.0)]
    assert (await connector.run("SELECT pop_m FROM cities WHERE city = 'Rome'")).rows == [(2.8,)]


async def test_candidates_are_decided_by_execution(sample_db: Path, scripted: ScriptedFactory) -> None:
    """Three candidates: the greedy one disagrees with the two sampled ones, which agree on their
    result though their SQL differs; the larger group wins, the vote says how far they agreed."""
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    requests = []
    manager = await scripted([
        "COUNT(*) FROM customers WHERE 0",
        "COUNT(*) FROM customers",
        "COUNT(customer_id) AS n FROM customers",
    ])  # fmt: skip
    generate = manager.generate

    async def spy(request):  # type: ignore[no-untyped-def]
        requests.append(request)
        return await generate(request)

    manager.generate = spy  # type: ignore[method-assign]
    try:
        options = Text2SQLOptions(candidates=3, max_corrections=0)
        pipeline = Text2SQL(manager, "s", connector, options=options)
        answer = SQLAnswer("How many customers are there?")
        events = [e async for e in pipeline.steps(answer.question, answer)]
        assert answer.ok and answer.sql == "SELECT COUNT(*) FROM customers"
        assert answer.result is not None and answer.result.rows[0][0] > 0
        assert answer.confidence == pytest.approx(2 / 3)
        assert answer.vote["groups"] == [2, 1] and answer.vote["executed"] == 3
        assert [e["candidate"] for e in events if e["type"] == "attempt"] == [0, 1, 2]
        assert [e["type"] for e in events][-2:] == ["vote", "sql"]
        # The first candidate is greedy and unseeded (llama.cpp reuses the prompt's cache); the
        # others sample, each with its own seed.
        assert [(r.params.temperature, r.params.seed) for r in requests] == [(0.0, None), (0.7, 1), (0.7, 2)]
        assert answer.to_dict()["vote"]["agreement"] == round(2 / 3, 4)
    finally:
        await connector.close()


async def test_a_tie_goes_to_rows_over_nothing_then_to_the_greedy_answer(
    sample_db: Path, scripted: ScriptedFactory
) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    try:
        options = Text2SQLOptions(candidates=3, max_corrections=0)
        empty_first = await scripted(["name FROM products WHERE 0", "name FROM products", "nme FROM products"])
        answer = await Text2SQL(empty_first, "s", connector, options=options).answer("product names?")
        assert answer.sql == "SELECT name FROM products" and answer.confidence == pytest.approx(1 / 3)
        assert [a.code for a in answer.attempts] == [None, None, "query_failed"]

        two_results = await scripted(["name FROM products", "category FROM products", "DROP"], name="s2")
        answer = await Text2SQL(two_results, "s2", connector, options=options).answer("product names?")
        assert answer.sql == "SELECT name FROM products"  # the greedy candidate's group

        nothing = await scripted(["nme FROM products", "I do not know", "nme FROM prods"], name="s3")
        answer = await Text2SQL(nothing, "s3", connector, options=options).answer("product names?")
        assert not answer.ok and answer.confidence == 0.0 and answer.vote["executed"] == 0
        assert answer.error is not None and answer.sql == "SELECT nme FROM products"
    finally:
        await connector.close()


async def test_examples_are_picked_for_the_question_from_the_schemas_pool(sample_db: Path) -> None:
    connector = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    try:
        tables = await connector.schema()
    finally:
        await connector.close()
    pool = example_pool(tables, "sqlite")
    for shot in pool:  # every pooled example runs on the database it was written from
        assert run_sqlite(sample_db, shot.example.sql) is not None, shot.example.sql
    never = pick_examples("Which suppliers have never supplied a product?", pool, k=4)
    assert len(never) == 4 and "NOT IN" in never[-1].sql and "suppliers" in never[-1].sql  # the closest last
    per_region = pick_examples("How many customers are there in each region?", pool, k=3)
    assert any("GROUP BY" in e.sql and "regions" in e.sql and "customers" in e.sql for e in per_region)
    chinese = pick_examples("每个类别有多少种产品?", pool, k=3)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese[-1].question) and "GROUP BY" in chinese[-1].sql
    assert len({e.sql for e in chinese}) == 3  # never the same SQL twice
