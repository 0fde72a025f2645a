"""Grounding in the pipeline: value hints in the prompt, verified examples shown to the model, and a
verified SQL reused for a repeated question (with a value swapped only when the index confirms it)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datapilot.core.types import ModelRequest
from datapilot.datasource import Connector, SQLAlchemyConnector
from datapilot.text2sql import ExampleStore, SQLAnswer, Text2SQL, Text2SQLOptions, ValueIndex
from datapilot.text2sql._grounding import Grounding, reuse, schema_words
from tests.text2sql.conftest import ScriptedFactory

DAIRY_SQL = "SELECT AVG(unit_price) FROM products WHERE category = 'Dairy'"


@pytest.fixture
async def connector(sample_db: Path) -> AsyncIterator[Connector]:
    c = SQLAlchemyConnector(f"sqlite:///{sample_db}")
    yield c
    await c.close()


@pytest.fixture
async def values(connector: Connector) -> ValueIndex:
    return await ValueIndex.build(connector)


async def spy_on(manager):  # type: ignore[no-untyped-def]
    seen: list[ModelRequest] = []
    generate = manager.generate

    async def spy(request):  # type: ignore[no-untyped-def]
        seen.append(request)
        return await generate(request)

    manager.generate = spy
    return seen


async def test_values_the_question_names_reach_the_prompt(
    connector: Connector, values: ValueIndex, scripted: ScriptedFactory
) -> None:
    manager = await scripted(["COUNT(*) FROM customers WHERE city = 'Seattle'"])
    seen = await spy_on(manager)
    pipeline = Text2SQL(manager, "s", connector, grounding=Grounding("sample", values=lambda: values))
    answer = SQLAnswer("How many customers are in seattle?")
    events = [e async for e in pipeline.steps(answer.question, answer)]
    assert answer.ok
    hit = next(e for e in events if e["type"] == "values")["hits"][0]  # the best; a partial one may follow
    assert (hit["table"], hit["column"], hit["value"]) == ("customers", "city", "Seattle")
    assert "-- Values in the next question: customers.city = 'Seattle'" in (seen[0].prompt or "")
    # Switched off, or with the index still building, the prompt has no hints.
    for name, grounding, options in (
        ("off", Grounding("sample", values=lambda: values), Text2SQLOptions(values=False)),
        ("building", Grounding("sample", values=lambda: None), Text2SQLOptions()),
    ):
        manager = await scripted(["COUNT(*) FROM customers"], name=name)
        seen = await spy_on(manager)
        await Text2SQL(manager, name, connector, grounding=grounding, options=options).answer(
            "How many customers are in seattle?"
        )
        assert "Values in the next question" not in (seen[0].prompt or "")


async def test_verified_examples_are_shown_nearest_the_question(
    tmp_path: Path, connector: Connector, scripted: ScriptedFactory
) -> None:
    store = ExampleStore.at_home(tmp_path)
    try:
        await store.add("sample", "What is the average unit price of products in the Dairy category?", DAIRY_SQL)
        manager = await scripted(["MAX(unit_price) FROM products WHERE category = 'Snacks'"])
        seen = await spy_on(manager)
        pipeline = Text2SQL(manager, "s", connector, grounding=Grounding("sample", examples=store))
        answer = await pipeline.answer("What is the highest unit price of products in the Snacks category?")
        assert answer.ok and answer.reused is None  # another aggregate: shown, not reused
        prompt = seen[0].prompt or ""
        shown = "-- Question: What is the average unit price of products in the Dairy category?\n" + DAIRY_SQL + ";"
        assert prompt.count("-- Question:") == 5  # three picked from the pool, the verified one, the question
        assert prompt.endswith(shown + "\n\n-- Question: What is the highest unit price of products in the Snacks "
                               "category?\nSELECT")  # fmt: skip
    finally:
        store.close()


async def test_a_repeated_question_reuses_the_verified_sql_without_the_model(
    tmp_path: Path, connector: Connector, values: ValueIndex, scripted: ScriptedFactory
) -> None:
    from datapilot.cache import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    store = ExampleStore.at_home(tmp_path, embedder=embedder)
    try:
        await store.add(
            "sample",
            "What is the average unit price of products in the Dairy category?",
            DAIRY_SQL,
            connector=connector,
        )
        manager = await scripted(["COUNT(*) FROM products"])
        seen = await spy_on(manager)
        grounding = Grounding("sample", values=values, examples=store)
        pipeline = Text2SQL(manager, "s", connector, grounding=grounding)
        await pipeline.answer("warm-up: how many products?")  # the embedder and the schema load once
        seen.clear()

        started = time.perf_counter()
        answer = await pipeline.answer("What's the mean unit price of the products in the Dairy category?")
        elapsed = time.perf_counter() - started
        assert answer.ok and answer.reused is not None and answer.sql == DAIRY_SQL and not seen
        assert answer.confidence == 1.0 and answer.to_dict()["reused"]["swapped"] == {}
        print(f"reused in {elapsed * 1000:.0f} ms")

        # Another value of the same column, confirmed by the index: the same SQL with the new value.
        answer = await pipeline.answer("What is the average unit price of products in the Snacks category?")
        assert answer.reused is not None and not seen
        assert answer.sql == DAIRY_SQL.replace("'Dairy'", "'Snacks'")
        assert answer.reused.swapped == {"Dairy": "Snacks"}

        # A value the index does not know, another column named, or a number: the model writes it.
        for question in (
            "What is the average unit price of products in the Spaceships category?",
            "What is the average unit cost of products in the Dairy category?",
        ):
            seen.clear()
            answer = await pipeline.answer(question)
            assert answer.reused is None and seen, question
    finally:
        store.close()
        await embedder.aclose()


def test_reuse_rules_on_their_own() -> None:
    from datapilot.datasource import ColumnInfo, TableInfo
    from datapilot.text2sql import StoredExample

    tables = [TableInfo("orders", [ColumnInfo("order_date", "TEXT"), ColumnInfo("status", "TEXT")])]
    ex = StoredExample(1, "s", "How many orders in 2023 were shipped?", "SELECT COUNT(*) FROM orders WHERE "
                       "strftime('%Y', order_date) = '2023' AND status = 'shipped'", True, "", 0.0)  # fmt: skip
    ranked = [(ex, 0.97)]
    # The year differs: numbers must be equal, never swapped.
    assert reuse("How many orders in 2024 were shipped?", ranked, [], tables, threshold=0.9, dialect="sqlite") is None
    same = reuse("How many orders in 2023 got shipped?", ranked, [], tables, threshold=0.9, dialect="sqlite")
    assert same is not None and same.sql == ex.sql
    assert (
        reuse("How many orders in 2023 got shipped?", [(ex, 0.8)], [], tables, threshold=0.9, dialect="sqlite") is None
    )
    assert schema_words("How many orders by status?", tables) == {"order", "status"}
