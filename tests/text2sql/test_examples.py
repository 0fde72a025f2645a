"""The example store: verified question -> SQL pairs per data source, checked before they are kept,
found again for a paraphrase with other values; through the library, the REST API and the CLI."""

# ruff: noqa: RUF001 - Chinese questions end with a full-width question mark

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from datapilot.cache import HashEmbedder
from datapilot.core.config import CacheEmbedderConfig, DataSettings, ModelConfig, Settings
from datapilot.core.errors import InvalidRequestError
from datapilot.datasource import ColumnInfo, Connector, DataSources, TableInfo
from datapilot.server.app import create_app
from datapilot.text2sql import Example, ExampleStore, StoredExample, mask_question

BERLIN_SQL = "SELECT COUNT(*) FROM orders JOIN customers USING (customer_id) WHERE customers.city = 'Berlin'"
DAIRY_SQL = "SELECT AVG(unit_price) FROM products WHERE category = 'Dairy'"
HIRED_SQL = "SELECT first_name, last_name FROM employees WHERE hire_date > '2020-01-01'"
SEGMENT_SQL = "SELECT COUNT(*) FROM customers WHERE segment = 'Retail'"

EXAMPLES = [
    ("How many orders were shipped to Berlin?", BERLIN_SQL),
    ("What is the average unit price of products in the Dairy category?", DAIRY_SQL),
    ("List the names of employees hired after 2020", HIRED_SQL),
    ("How many customers are in the Retail segment?", SEGMENT_SQL),
]

# A schema with Chinese comments and values, as many Chinese databases have.
CN_TABLES = [
    TableInfo(
        "customers",
        [
            ColumnInfo("customer_id", "INTEGER", primary_key=True),
            ColumnInfo("city", "TEXT", comment="城市", samples=["上海", "北京", "Berlin"]),
            ColumnInfo("segment", "TEXT", samples=["Retail", "Online"]),
        ],
        comment="客户",
    ),
    TableInfo(
        "orders",
        [
            ColumnInfo("order_id", "INTEGER", primary_key=True),
            ColumnInfo("order_date", "TEXT", comment="下单日期"),
            ColumnInfo("shipping_cost", "REAL", comment="运费"),
        ],
        comment="订单",
    ),
    TableInfo("product_categories", [ColumnInfo("unit_price", "REAL")]),
]


class CountingEmbedder:
    """A hash embedder that counts the texts it was asked to embed."""

    def __init__(self) -> None:
        self.inner = HashEmbedder(128)
        self.name = "counting"
        self.texts: list[str] = []

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return await self.inner.embed(texts)


@pytest.fixture
async def sample(sources: DataSources) -> Connector:
    return await sources.connector("sample")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ExampleStore]:
    s = ExampleStore.at_home(tmp_path / "store")
    yield s
    s.close()


# --- the store ------------------------------------------------------------------------------------------------


async def test_add_list_get_and_remove(store: ExampleStore, sample: Connector) -> None:
    first = await store.add("sample", "  How many orders were shipped to Berlin? ", BERLIN_SQL + ";", connector=sample)
    assert isinstance(first, StoredExample) and first.verified and first.question.startswith("How many")
    assert first.sql == BERLIN_SQL  # trailing semicolon dropped
    assert first.to_prompt() == Example("How many orders were shipped to Berlin?", BERLIN_SQL)
    wrong = await store.add("sample", "Average price of dairy?", "SELECT AVG(unit_cost) FROM products", verified=False,
                            note="cost is not price")  # fmt: skip
    # Rated wrong without running: a wrong pair need not even parse.
    broken = await store.add("sample", "Orders per month?", "SELEC month FROM", verified=False)
    assert [e.id for e in store.list("sample")] == [first.id, wrong.id, broken.id]
    assert [e.id for e in store.list("sample", verified=True)] == [first.id]
    assert {e.id for e in store.list("sample", verified=False)} == {wrong.id, broken.id}
    assert store.list("other") == []
    assert store.get(wrong.id) == wrong and wrong.note == "cost is not price"
    assert store.get(10_000) is None

    # The same pair again is one example: the latest rating wins.
    again = await store.add(
        "sample", "Average price of dairy?", "SELECT AVG(unit_cost) FROM products", connector=sample
    )
    assert again.id == wrong.id and again.verified and again.note == "cost is not price"
    assert len(store.list("sample")) == 3

    assert not store.remove("other", first.id)  # another source's id
    assert store.remove("sample", first.id) and not store.remove("sample", first.id)
    assert [e.id for e in store.list("sample")] == [wrong.id, broken.id]
    assert first.to_dict()["question"] == first.question and set(first.to_dict()) == {
        "id", "source", "question", "sql", "verified", "note", "created_at"
    }  # fmt: skip
    await store.add("other", "Orders?", "SELECT COUNT(*) FROM orders", connector=sample)
    assert store.forget_source("sample") == 2 and store.list("sample") == []
    assert len(store.list("other")) == 1  # another source keeps its own


@pytest.mark.parametrize(
    ("question", "sql", "param", "words"),
    [
        ("", "SELECT 1", "question", "question is empty"),
        ("   ", "SELECT 1", "question", "question is empty"),
        ("Drop them", "DROP TABLE orders", "sql", "refused"),
        ("Two at once", "SELECT 1; SELECT 2", "sql", "2 statements"),
        ("Change it", "UPDATE orders SET status = 'x'", "sql", "refused"),
        ("Gibberish", "SELEC FROM WHERE (", "sql", "could not parse"),
        ("Unknown column", "SELECT no_such_column FROM orders", "sql", "does not run on 'sample'"),
        ("Unknown table", "SELECT * FROM no_such_table", "sql", "does not run on 'sample'"),
        ("Nothing", "  ;", "sql", "SQL is empty"),
    ],
)
async def test_invalid_examples_are_refused_and_nothing_is_stored(
    store: ExampleStore, sample: Connector, question: str, sql: str, param: str, words: str
) -> None:
    with pytest.raises(InvalidRequestError, match=words) as caught:
        await store.add("sample", question, sql, connector=sample)
    assert caught.value.param == param
    assert store.list("sample") == []


async def test_without_a_connector_the_sql_must_still_be_one_read_only_query(store: ExampleStore) -> None:
    with pytest.raises(InvalidRequestError, match="refused"):
        await store.add("db", "Delete everything", "DELETE FROM orders")
    assert (await store.add("db", "Count orders", "SELECT COUNT(*) FROM orders")).verified
    assert len(store.list("db")) == 1


async def test_import_json_spider_jsonl_and_csv(store: ExampleStore, sample: Connector, tmp_path: Path) -> None:
    plain = tmp_path / "examples.json"
    plain.write_text(json.dumps([{"question": q, "sql": s} for q, s in EXAMPLES[:2]]))
    spider = tmp_path / "spider.json"
    spider.write_text(json.dumps([
        {"db_id": "sample", "question": EXAMPLES[2][0], "query": EXAMPLES[2][1],
         "question_toks": ["List"], "query_toks": ["SELECT"]},
    ]))  # fmt: skip
    lines = tmp_path / "more.jsonl"
    lines.write_text(json.dumps({"question": "How many products are there?", "sql": "SELECT COUNT(*) FROM products"}))
    table = tmp_path / "examples.csv"
    table.write_text(
        "Question,SQL\n"
        f'"{EXAMPLES[3][0]}","{EXAMPLES[3][1]}"\n'
        '"上海有多少客户？","SELECT COUNT(*) FROM customers WHERE city = \'上海\'"\n'
    )
    assert len(await store.import_file("sample", plain, connector=sample)) == 2
    assert len(await store.import_file("sample", spider, connector=sample)) == 1
    assert len(await store.import_file("sample", lines, connector=sample)) == 1
    added = await store.import_file("sample", table, connector=sample)
    assert [e.question for e in added] == [EXAMPLES[3][0], "上海有多少客户？"]
    stored = store.list("sample")
    assert len(stored) == 6 and all(e.verified for e in stored)
    assert stored[2].sql == HIRED_SQL  # Spider's "query"
    # Importing the same file again adds nothing new.
    await store.import_file("sample", plain, connector=sample)
    assert len(store.list("sample")) == 6


async def test_an_import_with_one_bad_example_stores_none(
    store: ExampleStore, sample: Connector, tmp_path: Path
) -> None:
    items = [{"question": q, "sql": s} for q, s in EXAMPLES[:2]] + [{"question": "Oops", "sql": "DROP TABLE orders"}]
    with pytest.raises(InvalidRequestError, match="example 3: refused"):
        await store.import_examples("sample", items, connector=sample)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("q,answer\nx,SELECT 1\n")
    with pytest.raises(InvalidRequestError, match="needs the columns question and sql"):
        await store.import_file("sample", bad_csv)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"question": "x"')
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        await store.import_file("sample", bad_json)
    with pytest.raises(InvalidRequestError, match="example 1: the SQL is empty"):
        await store.import_examples("sample", [{"question": "no sql"}])
    with pytest.raises(InvalidRequestError, match="cannot read"):
        await store.import_file("sample", tmp_path / "missing.json")
    assert store.list("sample") == []


# --- masking ----------------------------------------------------------------------------------------------------


def test_masking_english_questions() -> None:
    assert mask_question("How many orders were shipped to Berlin?") == "how many orders were shipped to [VALUE]"
    assert mask_question("How many orders were shipped to Berlin?", CN_TABLES) == (
        "how many [TABLE] were shipped to [VALUE]"
    )
    assert mask_question("What's the unit price of 'Green Tea' in New York and Los Angeles?", CN_TABLES) == (
        "whats the [COLUMN] of [VALUE] in [VALUE] and [VALUE]"
    )
    # Plural and singular table names, a multi-word table, numbers and dates, a known lower-case value.
    assert mask_question("Which product categories have unit prices above 10.5 since 2024-01-31?", CN_TABLES) == (
        "which [TABLE] have [COLUMN] above [VALUE] since [VALUE]"
    )
    assert mask_question("List each customer in the online segment", CN_TABLES) == (
        "list each [TABLE] in the [VALUE] [COLUMN]"
    )
    # The first word of a sentence is capitalised anyway: not a value; "I" never is.
    assert mask_question("Customers in Paris. Show them, I said") == "customers in [VALUE] show them i said"
    # Structure words stay even where a schema names a column after them.
    assert mask_question("How many orders in total?", [TableInfo("t", [ColumnInfo("total", "INT")])]) == (
        "how many orders in total"
    )


def test_masking_chinese_questions() -> None:
    assert mask_question("上海有多少客户？", CN_TABLES) == "[VALUE]有多少[TABLE]"
    assert mask_question("2024年北京的订单总数是多少？", CN_TABLES) == "[VALUE]年[VALUE]的[TABLE]总数是多少"
    assert mask_question("“老王”的客户城市是哪里", CN_TABLES) == "[VALUE]的[TABLE][COLUMN]是哪里"
    assert mask_question("「上海」的运费平均是多少", CN_TABLES) == "[VALUE]的[COLUMN]平均是多少"
    # Without a schema only quoted text and numbers are known values.
    assert mask_question("2024年上海有多少客户？") == "[VALUE]年上海有多少客户"


# --- similar ----------------------------------------------------------------------------------------------------


async def _fill(store: ExampleStore, connector: Connector | None = None) -> dict[str, StoredExample]:
    added = {}
    for question, sql in EXAMPLES:
        added[sql] = await store.add("sample", question, sql, connector=connector)
    # Rated wrong: the very question asked below, yet never offered as an example.
    await store.add("sample", "How many orders were shipped to Madrid?", "SELECT 1", verified=False)
    return added


PARAPHRASES = [
    ("How many orders got shipped to Madrid?", BERLIN_SQL),
    ("What's the mean unit price for products in the Snacks category?", DAIRY_SQL),
    ("Give me the names of employees hired after 2018", HIRED_SQL),
    ("How many customers does the Wholesale segment have?", SEGMENT_SQL),
]


async def test_similar_ranks_the_paraphrase_first_by_word_overlap(store: ExampleStore, sample: Connector) -> None:
    await _fill(store, sample)
    tables = await sample.schema()
    for question, sql in PARAPHRASES:
        found = await store.similar("sample", question, k=3, tables=tables)
        assert found and found[0].sql == sql, (question, [e.question for e in found])
        assert all(e.verified for e in found) and len(found) <= 3
    ranked = await store.ranked("sample", "How many orders got shipped to Madrid?", k=10)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert "Madrid" not in " ".join(e.question for e, _ in ranked)
    assert await store.similar("nowhere", "How many orders?") == []


async def test_similar_in_chinese(store: ExampleStore) -> None:
    store.set_schema("cn", CN_TABLES)
    for q, s in [
        ("上海有多少客户？", "SELECT COUNT(*) FROM customers WHERE city = '上海'"),
        ("2023年的订单运费总和是多少？", "SELECT SUM(shipping_cost) FROM orders WHERE order_date LIKE '2023%'"),
        ("How many orders were shipped to Berlin?", BERLIN_SQL),
    ]:
        await store.add("cn", q, s)
    assert (await store.similar("cn", "北京有几个客户", k=1))[0].question == "上海有多少客户？"
    assert (await store.similar("cn", "2022年订单的运费总和", k=1))[0].question.startswith("2023年")


async def test_vectors_are_embedded_once_per_example_and_kept(tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    store = ExampleStore.at_home(tmp_path, embedder=embedder)  # type: ignore[arg-type]
    try:
        await _fill(store)
        found = await store.similar("sample", "How many orders got shipped to Madrid?")
        assert found[0].sql == BERLIN_SQL
        assert len(embedder.texts) == len(EXAMPLES) + 1  # every verified example once, then the question
        assert "how many orders were shipped to [VALUE]" in embedder.texts
        embedder.texts.clear()
        await store.similar("sample", "How many customers are in the Online segment?")
        assert len(embedder.texts) == 1  # only the question
        new = await store.add("sample", "How many products are there?", "SELECT COUNT(*) FROM products")
        embedder.texts.clear()
        assert (await store.similar("sample", "How many products exist?", k=1))[0].id == new.id
        assert embedder.texts == ["how many products are there", "how many products exist"]
        # A schema masks some questions differently: those (only) are embedded again.
        store.set_schema("sample", CN_TABLES)
        embedder.texts.clear()
        await store.similar("sample", "How many orders?")
        assert embedder.texts == [
            "how many [TABLE] were shipped to [VALUE]",
            "what is the average [COLUMN] of products in the [VALUE] category",
            "how many [TABLE] are in the [VALUE] [COLUMN]",
            "how many [TABLE]",
        ]
    finally:
        store.close()
    # The vectors are kept in the store: a new process embeds only its questions.
    again = ExampleStore.at_home(tmp_path, embedder=embedder)  # type: ignore[arg-type]
    try:
        again.set_schema("sample", CN_TABLES)
        embedder.texts.clear()
        await again.similar("sample", "How many orders?")
        assert embedder.texts == ["how many [TABLE]"]
    finally:
        again.close()


async def test_similar_with_the_minilm_embedder(tmp_path: Path, sample: Connector) -> None:
    from datapilot.cache import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    store = ExampleStore.at_home(tmp_path, embedder=embedder)
    try:
        await _fill(store, sample)
        store.set_schema("sample", await sample.schema())
        for question, sql in PARAPHRASES:
            ranked = await store.ranked("sample", question, k=2)
            assert ranked[0][0].sql == sql, (question, ranked)
            assert ranked[0][1] > ranked[1][1]
    finally:
        store.close()
        await embedder.aclose()


# --- REST API ---------------------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> TestClient:
    settings = Settings(
        home=tmp_path / "home",
        models=[ModelConfig(name="s", backend="scripted")],
        data=DataSettings(embedder=CacheEmbedderConfig(kind="hash")),
    )
    return TestClient(create_app(settings))


def _error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_examples_api(api: TestClient) -> None:
    base = "/api/datasources/sample"
    with api as client:
        assert client.get(f"{base}/examples").json() == {"object": "list", "data": []}
        added = client.post(f"{base}/examples", json={"question": EXAMPLES[0][0], "sql": BERLIN_SQL, "note": "ok"})
        assert added.status_code == 200, added.text
        first = added.json()
        assert first["verified"] is True and first["note"] == "ok" and first["source"] == "sample"

        # Errors: 400 in the error shape, and nothing stored.
        refused = _error(client.post(f"{base}/examples", json={"question": "x", "sql": "DROP TABLE orders"}), 400)
        assert refused["code"] == "read_only_violation" and refused["param"] == "sql"
        failed = _error(client.post(f"{base}/examples", json={"question": "x", "sql": "SELECT nope FROM orders"}), 400)
        assert failed["code"] == "query_failed" and "does not run" in str(failed["message"])
        assert _error(client.post(f"{base}/examples", json={"question": " ", "sql": "SELECT 1"}), 400)["param"] == (
            "question"
        )
        assert _error(client.post(f"{base}/examples", json={"sql": "SELECT 1"}), 400)["param"] == "question"
        batch = [{"question": q, "sql": s} for q, s in EXAMPLES[1:]] + [{"question": "bad", "sql": "DELETE FROM x"}]
        assert "example 4" in str(_error(client.post(f"{base}/examples/import", json=batch), 400)["message"])
        assert [e["id"] for e in client.get(f"{base}/examples").json()["data"]] == [first["id"]]

        # Unknown source: 404 everywhere.
        for method, path, body in [
            ("GET", "/api/datasources/nope/examples", None),
            ("POST", "/api/datasources/nope/examples", {"question": "x", "sql": "SELECT 1"}),
            ("POST", "/api/datasources/nope/examples/import", [{"question": "x", "sql": "SELECT 1"}]),
            ("DELETE", "/api/datasources/nope/examples/1", None),
            ("POST", "/api/datasources/nope/feedback", {"question": "x", "sql": "SELECT 1", "rating": "down"}),
            ("GET", "/api/datasources/nope/examples/similar?q=x", None),
        ]:
            err = _error(client.request(method, path, json=body), 404)
            assert err["code"] == "datasource_not_found", (method, path)

        imported = client.post(f"{base}/examples/import", json=batch[:-1])
        assert imported.status_code == 200 and imported.json()["imported"] == 3

        up = client.post(f"{base}/feedback", json={"question": "How many products?", "sql": "SELECT COUNT(*) FROM "
                                                   "products", "rating": "up"})  # fmt: skip
        assert up.status_code == 200 and up.json()["message"] == "saved as a verified example"
        down = client.post(f"{base}/feedback", json={"question": "How many orders were shipped to Madrid?",
                                                     "sql": "SELECT COUNT(*) FROM nowhere", "rating": "down",
                                                     "note": "no such table"})  # fmt: skip
        assert down.status_code == 200 and down.json()["message"] == "recorded as wrong"
        assert down.json()["example"]["verified"] is False
        bad_up = client.post(f"{base}/feedback", json={"question": "x", "sql": "SELECT * FROM nowhere", "rating": "up"})
        assert _error(bad_up, 400)["code"] == "query_failed"
        assert _error(client.post(f"{base}/feedback", json={"question": "x", "sql": "SELECT 1", "rating": "meh"}), 400)

        verified = client.get(f"{base}/examples", params={"verified": "true"}).json()["data"]
        wrong = client.get(f"{base}/examples", params={"verified": "false"}).json()["data"]
        assert len(verified) == 5 and [w["note"] for w in wrong] == ["no such table"]

        similar = client.get(f"{base}/examples/similar", params={"q": "How many orders got shipped to Madrid?", "k": 2})
        assert similar.status_code == 200, similar.text
        body = similar.json()
        assert body["masked"] == "how many [TABLE] got [VALUE] to [VALUE]"  # "shipped" is a status value
        assert len(body["data"]) == 2 and body["data"][0]["sql"] == BERLIN_SQL and "score" in body["data"][0]
        assert all(e["verified"] for e in body["data"])
        assert _error(client.get(f"{base}/examples/similar"), 400)["param"] == "query.q"

        assert client.delete(f"{base}/examples/{first['id']}").json() == {"id": first["id"], "deleted": True}
        assert _error(client.delete(f"{base}/examples/{first['id']}"), 404)["code"] == "example_not_found"
        assert _error(client.delete(f"{base}/examples/abc"), 400)
        assert len(client.get(f"{base}/examples").json()["data"]) == 5


# --- CLI --------------------------------------------------------------------------------------------------------


def test_cli_db_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datapilot.cli.main import app

    monkeypatch.chdir(tmp_path)  # no datapilot.toml around
    monkeypatch.setenv("COLUMNS", "200")
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(app, ["db", "examples", *args, *home])

    added = run("add", "sample", "--question", EXAMPLES[0][0], "--sql", BERLIN_SQL, "--note", "checked")
    assert added.exit_code == 0, added.output
    first = json.loads(added.stdout)
    assert first["question"] == EXAMPLES[0][0] and first["verified"] is True

    refused = run("add", "sample", "-q", "Drop it", "-s", "DROP TABLE orders")
    assert refused.exit_code == 1 and "refused" in str(refused.exception)
    failing = run("add", "sample", "-q", "Nope", "-s", "SELECT nope FROM orders")
    assert failing.exit_code == 1 and "does not run" in str(failing.exception)
    missing = run("add", "nosuch", "-q", "x", "-s", "SELECT 1")
    assert missing.exit_code == 1 and "no data source named 'nosuch'" in str(missing.exception)

    file = tmp_path / "more.csv"
    file.write_text("question,sql\n" + "".join(f'"{q}","{s}"\n' for q, s in EXAMPLES[1:]))
    imported = run("import", "sample", str(file))
    assert imported.exit_code == 0 and "imported 3 examples into sample" in imported.stdout

    listed = run("list", "sample", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["question"] for r in rows] == [q for q, _ in EXAMPLES]
    shown = run("list", "sample")
    assert shown.exit_code == 0 and "checked" in shown.stdout
    assert json.loads(run("list", "sample", "--wrong", "--json").stdout) == []

    assert run("remove", "sample", str(first["id"])).exit_code == 0
    gone = run("remove", "sample", str(first["id"]))
    assert gone.exit_code == 1 and "has no example" in str(gone.exception)
    assert len(json.loads(run("list", "sample", "--json").stdout)) == 3
    assert runner.invoke(app, ["db", "examples", "--help"]).exit_code == 0
