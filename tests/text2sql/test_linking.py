"""Schema linking that scales: a 300-table schema, the join path between chosen tables, the tables of
the values a question names, and the schema's vectors embedded once."""

from __future__ import annotations

from datapilot.cache import HashEmbedder
from datapilot.datasource import ColumnInfo, ForeignKey, TableInfo
from datapilot.text2sql import SchemaLinker
from datapilot.text2sql._wide import linking_cases, wide_schema


class Counting(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.texts = 0

    async def embed(self, texts: list[str]):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return await super().embed(texts)


def _table(name: str, *fks: str, columns: tuple[str, ...] = ()) -> TableInfo:
    cols = [ColumnInfo(f"{name}_id", "INTEGER", primary_key=True), *(ColumnInfo(c, "TEXT") for c in columns)]
    cols += [ColumnInfo(f"{ref}_id", "INTEGER") for ref in fks]
    return TableInfo(name, cols, [ForeignKey([f"{ref}_id"], ref, [f"{ref}_id"]) for ref in fks])


async def test_the_minilm_linker_finds_the_gold_tables_of_a_300_table_schema() -> None:
    from datapilot.cache import SentenceTransformerEmbedder

    tables, cases = wide_schema(), linking_cases()
    assert len(tables) == 300 and len(cases) == 90
    embedder = SentenceTransformerEmbedder()
    try:
        linker = SchemaLinker(embedder, top_k=8)
        found = needed = 0
        for case in cases:
            chosen = {t.name for t in await linker.select(case.question, tables)}
            assert len(chosen) <= 8
            found += len(set(case.gold) & chosen)
            needed += len(case.gold)
        assert found / needed >= 0.95, found / needed
    finally:
        await embedder.aclose()


async def test_the_tables_joining_two_chosen_ones_come_along() -> None:
    chain = [
        _table("customers", columns=("company_name",)),
        _table("orders", "customers", columns=("order_date",)),
        _table("order_items", "orders", "products", columns=("quantity",)),
        _table("products", columns=("product_name",)),
        *(_table(f"noise_{i}", columns=(f"thing_{i}",)) for i in range(12)),
    ]
    linker = SchemaLinker(None, top_k=5)
    chosen = [t.name for t in await linker.select("Which customers bought which products?", chain)]
    assert {"customers", "products", "orders", "order_items"} <= set(chosen) and len(chosen) <= 5
    # A table the caller knows is needed (it holds a value the question names) is always there.
    must = [t.name for t in await linker.select("Which customers bought which products?", chain, must={"noise_7"})]
    assert "noise_7" in must and len(must) <= 5


async def test_the_schema_is_embedded_once_across_questions() -> None:
    embedder = Counting()
    tables = wide_schema()[:40]
    linker = SchemaLinker(embedder, top_k=8)
    await linker.select("how many members?", tables)
    first = embedder.texts
    assert first > len(tables)  # tables and their columns
    await linker.select("total fines per member?", tables)
    assert embedder.texts == first + 1  # only the new question
