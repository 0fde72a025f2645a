"""Training pairs written from a database's own schema: the sample business, the clinic, a DuckDB file."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import random
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datapilot.core.errors import InvalidRequestError
from datapilot.datasource import (
    DuckDBConnector,
    SQLAlchemyConnector,
    TableInfo,
    build_sample_database,
    check_read_only,
)
from datapilot.text2sql import ensure_heldout_database, load_questions
from datapilot.train._generate import (
    FAMILIES,
    Pair,
    check_no_leakage,
    export_sqlite,
    generate_pairs,
    leaked,
    normalise_question,
    split_pairs,
    sqlite_source_path,
    tables_json_entry,
    write_spider,
)


def _generate(path: Path, db_id: str, **kwargs: object) -> list[Pair]:
    async def go() -> list[Pair]:
        connector = SQLAlchemyConnector(f"sqlite:///{path}")
        try:
            return await generate_pairs(connector, db_id, **kwargs)  # type: ignore[arg-type]
        finally:
            await connector.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Pair]]:
    path = build_sample_database(tmp_path_factory.mktemp("train-sample") / "sample.sqlite")
    return path, _generate(path, "sample", seed=0)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Pair]]:
    path = ensure_heldout_database(tmp_path_factory.mktemp("train-clinic"))
    return path, _generate(path, "clinic", seed=0)


def _by_sql(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for p in pairs:
        out.setdefault(p.query, []).append(p)
    return out


def _run(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("which", ["sample", "clinic"])
def test_every_query_is_read_only_and_meaningful(which: str, request: pytest.FixtureRequest) -> None:
    path, pairs = request.getfixturevalue(which)
    assert 500 <= len(pairs) <= 2000
    for sql, group in _by_sql(pairs).items():
        check_read_only(sql, "sqlite")
        rows = _run(path, sql)
        assert rows, sql
        assert any(v is not None for r in rows for v in r), sql
        if not re.search(r"\bLIMIT \d+$", sql):
            assert len(rows) <= 200, sql
        assert {p.template for p in group} == {group[0].template}
        assert all(p.db_id == which and p.difficulty in ("easy", "medium", "hard", "extra") for p in group)


@pytest.mark.parametrize("which", ["sample", "clinic"])
def test_families_languages_and_phrasings(which: str, request: pytest.FixtureRequest) -> None:
    _, pairs = request.getfixturevalue(which)
    families = Counter(p.template for p in pairs)
    assert len(families) >= 20, families
    assert set(families) <= set(FAMILIES)
    assert max(families.values()) <= 0.12 * len(pairs), families  # round-robin: no family dominates
    for needed in ("count_filter", "group_agg", "join_filter", "join2", "date_year", "not_in", "top_k", "having"):
        assert needed in families, needed
    languages = Counter(p.language for p in pairs)
    assert set(languages) == {"en", "zh"} and min(languages.values()) > 0.4 * len(pairs)
    assert all(re.search(r"[\u4e00-\u9fff]", p.question) for p in pairs if p.language == "zh")
    per_sql = [Counter(p.language for p in group) for group in _by_sql(pairs).values()]
    assert all(max(c.values()) <= 3 for c in per_sql)
    assert sum(c["en"] == 3 for c in per_sql) > 0.8 * len(per_sql)
    assert sum(c["zh"] >= 2 for c in per_sql) > 0.8 * len(per_sql)
    assert len({normalise_question(p.question) for p in pairs}) == len(pairs)  # no duplicate questions
    assert {p.difficulty for p in pairs} >= {"easy", "medium", "hard", "extra"}


def test_questions_say_what_the_query_does(sample: tuple[Path, list[Pair]]) -> None:
    _, pairs = sample
    words = {1: "one", 3: "three", 5: "five", 10: "ten"}
    checked = 0
    for p in pairs:
        for value in re.findall(r"= '([^']*)'", p.query):
            if p.template in ("count_filter", "list_filter", "join_filter", "and_filter", "in_subquery", "ratio"):
                assert value in p.question, (p.question, p.query)
                checked += 1
        limit = re.search(r"LIMIT (\d+)$", p.query)
        if limit and p.template == "top_k" and int(limit.group(1)) > 1 and p.language == "en":
            k = int(limit.group(1))
            assert str(k) in p.question or words[k] in p.question, (p.question, p.query)
        year = re.search(r"LIKE '(\d{4})%'", p.query)
        if year and p.template == "date_year":
            assert year.group(1) in p.question
    assert checked > 100
    # identifiers read as words: no snake_case in English questions
    assert not [p.question for p in pairs if p.language == "en" and re.search(r"[a-z]_[a-z]", p.question)
                and "no_show" not in p.question]  # fmt: skip


def test_deterministic_for_a_seed(tmp_path: Path, sample: tuple[Path, list[Pair]]) -> None:
    path, pairs = sample
    again = _generate(path, "sample", seed=0, max_pairs=600)
    assert again == pairs[:600]  # the same pairs, in the same order (a smaller cap stops earlier)
    other = _generate(path, "sample", seed=1, max_pairs=150, phrasings=2, languages=("en",))
    assert len(other) == 150 and {p.language for p in other} == {"en"}
    assert [p.question for p in other[:50]] != [p.question for p in pairs if p.language == "en"][:50]


def test_progress_and_cap(sample: tuple[Path, list[Pair]]) -> None:
    path, _ = sample
    seen: list[tuple[int, int]] = []
    pairs = _generate(path, "sample", seed=3, max_pairs=120, progress=lambda done, total: seen.append((done, total)))
    assert len(pairs) == 120
    assert seen[-1] == (120, 120) and all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))
    assert len({p.template for p in pairs}) >= 15  # families take turns from the first pair on


def test_leakage_is_removed(sample: tuple[Path, list[Pair]]) -> None:
    _, pairs = sample
    target = next(p for p in pairs if p.template == "count_filter" and p.language == "en")
    variant = f"  {target.question.upper().rstrip('?')} ? "  # other case, spaces and punctuation
    assert leaked(pairs, [variant]) == [target]
    kept = check_no_leakage(pairs, [variant])
    assert len(kept) == len(pairs) - 1 and target not in kept
    # a gold query (whitespace and case aside) removes every phrasing of it
    gold = "  " + target.query.lower().replace(" ", "   ") + ";"
    same_sql = [p for p in pairs if p.query == target.query]
    kept = check_no_leakage(pairs, [], [gold])
    assert len(pairs) - len(kept) == len(same_sql) >= 4
    assert check_no_leakage(pairs, ["a question nobody asked"]) == pairs


def test_split_keeps_phrasings_together(sample: tuple[Path, list[Pair]]) -> None:
    _, pairs = sample
    train, dev = split_pairs(pairs, dev_share=0.1, seed=0)
    assert len(train) + len(dev) == len(pairs)
    assert not {p.query for p in train} & {p.query for p in dev}
    queries = len({p.query for p in pairs})
    assert abs(len({p.query for p in dev}) - round(0.1 * queries)) <= 1
    assert len({p.template for p in dev}) >= 10  # dev spreads over the families
    assert split_pairs(pairs, 0.1, seed=0) == (train, dev)
    assert split_pairs(pairs, 0.1, seed=1)[1] != dev
    with pytest.raises(InvalidRequestError):
        split_pairs(pairs, 1.5)


def test_write_spider(tmp_path: Path, sample: tuple[Path, list[Pair]]) -> None:
    path, pairs = sample
    train, dev = split_pairs(pairs, 0.1)

    async def schema_and_source() -> tuple[list[TableInfo], Path | None]:
        connector = SQLAlchemyConnector(f"sqlite:///{path}")
        try:
            return await connector.schema(), sqlite_source_path(connector)
        finally:
            await connector.close()

    schema, source = asyncio.run(schema_and_source())
    assert source is not None and source.resolve() == path.resolve()
    written = write_spider(tmp_path / "spider", "sample", train, dev, schema, source)
    assert set(written) == {"train", "dev", "gold", "tables", "database"}

    loaded = load_questions(written["train"])
    assert len(loaded) == len(train) and loaded[0].db_id == "sample"
    assert {q.language for q in loaded} == {"en", "zh"} and all("template" in q.extra for q in loaded)
    dev_items = json.loads(written["dev"].read_text("utf-8"))
    assert [d["question"] for d in dev_items] == [p.question for p in dev]
    assert set(dev_items[0]) >= {"db_id", "question", "query", "difficulty", "language", "template"}
    gold = written["gold"].read_text("utf-8").splitlines()
    assert len(gold) == len(dev) and all(line.endswith("\tsample") for line in gold)

    (entry,) = json.loads(written["tables"].read_text("utf-8"))
    assert entry == tables_json_entry("sample", schema)
    names = entry["table_names_original"]
    assert names == [t.name for t in schema] and "order items" in entry["table_names"]
    cols = entry["column_names_original"]
    assert cols[0] == [-1, "*"] and len(cols) == len(entry["column_names"]) == len(entry["column_types"])
    assert len(cols) == 1 + sum(len(t.columns) for t in schema)
    assert set(entry["column_types"]) <= {"text", "number", "time", "boolean", "others"}
    for i in entry["primary_keys"]:
        table = schema[cols[i][0]]
        assert next(c for c in table.columns if c.name == cols[i][1]).primary_key
    assert len(entry["primary_keys"]) == len(schema)
    fks = {(t.name, fk.columns[0], fk.ref_table, fk.ref_columns[0]) for t in schema for fk in t.foreign_keys}
    assert {(names[cols[a][0]], cols[a][1], names[cols[b][0]], cols[b][1]) for a, b in entry["foreign_keys"]} == fks

    copy = written["database"]
    assert copy == tmp_path / "spider" / "database" / "sample" / "sample.sqlite"
    for line in gold:
        _run(copy, line.split("\t")[0])


@pytest.mark.parametrize("which", ["clinic"])
def test_any_schema_no_sample_names(which: str, request: pytest.FixtureRequest) -> None:
    """The clinic database gets its own words (patients, doctors, 科室) and nothing of the sample's."""
    _, pairs = request.getfixturevalue(which)
    text = " ".join(p.query + " " + p.question for p in pairs).lower()
    for word in ("customer", "supplier", "order_items", "product"):
        assert word not in text
    zh = " ".join(p.question for p in pairs if p.language == "zh")
    assert "患者" in zh and "医生" in zh and "科室" in zh and "预约" in zh
    assert any("hired in" in p.question for p in pairs)  # hire_date reads as a verb


def _duckdb_file(path: Path) -> Path:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE stores (store_id INTEGER, name VARCHAR, city VARCHAR, opened_on DATE)")
    con.execute(
        "CREATE TABLE sales (sale_id INTEGER, store_id INTEGER, sold_on DATE, amount DOUBLE, quantity INTEGER, "
        "unit_price DOUBLE, returned BOOLEAN, channel VARCHAR)"
    )
    rng = random.Random(7)
    names = ["Alpha", "Beta", "Gamma", "Delta", "Omega", "Sigma"]
    con.executemany(
        "INSERT INTO stores VALUES (?, ?, ?, ?)",
        [(i, f"{n} Store", ["Lyon", "Paris", "Nice"][i % 3], dt.date(2015 + i, 3, i)) for i, n in enumerate(names, 1)],
    )
    rows = []
    for i in range(1, 301):
        day = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(700))
        price = round(rng.uniform(2, 40), 2)
        qty = rng.randint(1, 9)
        rows.append(
            (i, rng.randint(1, 5), day, qty * price, qty, price, rng.random() < 0.1, rng.choice(["web", "shop"]))
        )
    con.executemany("INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()
    return path


def test_duckdb_source(tmp_path: Path) -> None:
    path = _duckdb_file(tmp_path / "shop.duckdb")

    async def go() -> tuple[list[Pair], list[Pair], list[TableInfo], Path, list[list[tuple[object, ...]]]]:
        connector = DuckDBConnector(path)
        try:
            plain = await generate_pairs(connector, "shop", seed=0, max_pairs=150)
            pairs = await generate_pairs(connector, "shop", seed=0, guess_joins=True)
            assert sqlite_source_path(connector) is None
            results = [(await connector.run(sql, limit=1000)).rows for sql in _by_sql(pairs)]
            schema = await connector.schema()
            exported = await export_sqlite(connector, tmp_path / "export.sqlite", rows_per_table=1000, guess_joins=True)
            return plain, pairs, schema, exported, results
        finally:
            await connector.close()

    plain, pairs, schema, exported, results = asyncio.run(go())
    # DuckDB declares no foreign keys: joins (which the SQL grammar could not write) only when asked for
    assert not {p.template for p in plain} & {"join_filter", "join_group", "join_top", "join2", "not_in"}
    assert len(pairs) >= 200 and all(results)
    families = {p.template for p in pairs}
    assert {"join_filter", "join_group", "date_year", "date_group", "flag", "arithmetic"} <= families
    assert any("STRFTIME(CAST(" in p.query for p in pairs)  # dates transpiled for DuckDB ...
    assert all(p.sqlite_query for p in pairs)  # ... and kept in SQLite's dialect for the Spider copy
    for sql in {p.sqlite_query for p in pairs}:
        assert _run(exported, sql) is not None
    assert _run(exported, "SELECT COUNT(*) FROM sales")[0][0] == 300

    train, dev = split_pairs(pairs, 0.2)
    written = write_spider(tmp_path / "spider", "shop", train, dev, schema, exported, guess_joins=True)
    (entry,) = json.loads(written["tables"].read_text("utf-8"))
    assert len(entry["foreign_keys"]) == 1 and len(entry["primary_keys"]) == 2  # keys guessed from names
    assert tables_json_entry("shop", schema)["foreign_keys"] == []
    items = json.loads(written["dev"].read_text("utf-8"))
    assert all("source_query" in item for item in items)
    for line in written["gold"].read_text("utf-8").splitlines():
        _run(written["database"], line.split("\t")[0])


def test_empty_database_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(InvalidRequestError, match="no tables"):
        _generate(empty, "empty")
    rowless = tmp_path / "rowless.sqlite"
    con = sqlite3.connect(rowless)
    con.execute("CREATE TABLE things (thing_id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    con.close()
    with pytest.raises(InvalidRequestError, match="no training pairs"):
        _generate(rowless, "rowless")
    with pytest.raises(InvalidRequestError):
        _generate(rowless, "rowless", languages=("fr",))


@pytest.fixture(scope="module")
def gemma_vocab_only(models_home: Path) -> Iterator[Any]:
    """The embedded Gemma's vocabulary (no weights), for llama.cpp's grammar sampler."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from datapilot.models.assets import resolve_model_path
    from tests.text2sql.test_grammar import GEMMA

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(resolve_model_path(GEMMA, models_home, None)).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def test_the_sql_grammar_admits_the_queries(
    sample: tuple[Path, list[Pair]], clinic: tuple[Path, list[Pair]], gemma_vocab_only: Any
) -> None:
    """The queries are ones the model can write under the prompt's SQL grammar (no aliases outside the
    select list, joins along declared keys, one line): training on others would teach it dead ends."""
    from datapilot.text2sql import sql_grammar
    from tests.text2sql.test_grammar import admits

    for path, pairs in (sample, clinic):

        async def schema(path: Path = path) -> list[TableInfo]:
            connector = SQLAlchemyConnector(f"sqlite:///{path}")
            try:
                return await connector.schema()
            finally:
                await connector.close()

        grammar = sql_grammar(asyncio.run(schema()), "sqlite")
        assert grammar is not None
        per_family: dict[str, list[str]] = {}
        for sql, group in _by_sql(pairs).items():
            per_family.setdefault(group[0].template, []).append(sql)
        for family, queries in sorted(per_family.items()):
            for sql in queries[:2]:
                assert admits(gemma_vocab_only, grammar, sql), (family, sql)
