"""Loaders, chunkers and the BM25 index: no models involved."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from datapilot.rag import (
    BM25Index,
    ChunkingConfig,
    DocumentParseError,
    FileTooLargeError,
    UnsupportedFileError,
    chunk_document,
    count_tokens,
    load_bytes,
)
from tests.rag.conftest import HTML, MARKDOWN, minimal_docx, minimal_pdf

BIG = 10_000_000


def test_markdown_keeps_sections_and_offsets() -> None:
    doc = load_bytes("guide.md", MARKDOWN.encode(), BIG)
    assert [s.section for s in doc.segments] == ["Guide", "Guide > Install", "Guide > Cache"]
    chunks = chunk_document(doc, ChunkingConfig(strategy="markdown"))
    assert [c.section for c in chunks] == ["Guide", "Guide > Install", "Guide > Cache"]
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text


def test_pdf_pages() -> None:
    doc = load_bytes("m.pdf", minimal_pdf(["Turbines spin.", "Gearbox oil."]), BIG)
    assert doc.kind == "pdf"
    assert [(s.page, doc.text[s.start : s.end]) for s in doc.segments] == [(1, "Turbines spin."), (2, "Gearbox oil.")]
    chunks = chunk_document(doc, ChunkingConfig())
    assert [c.page for c in chunks] == [1, 2]


def test_docx_headings_and_tables(tmp_path: Path) -> None:
    path = minimal_docx(tmp_path / "h.docx")
    doc = load_bytes("h.docx", path.read_bytes(), BIG)
    assert "twenty-five vacation days" in doc.text
    assert "HQ | Lisbon" in doc.text
    chunks = chunk_document(doc, ChunkingConfig(strategy="markdown"))
    assert any(c.section == "Handbook > Vacation" and "vacation days" in c.text for c in chunks)


def test_html_text_and_headings() -> None:
    doc = load_bytes("r.html", HTML.encode(), BIG)
    assert "var x" not in doc.text
    assert "The knowledge feature arrived." in doc.text
    assert doc.metadata["title"] == "Release notes"
    assert {s.section for s in doc.segments} == {"Release 2.0", "Release 2.0 > Fixes"}


def test_csv_and_json() -> None:
    doc = load_bytes("c.csv", b"city,country\nParis,France\nRome,Italy\n", BIG)
    assert doc.text.splitlines() == ["city: Paris; country: France", "city: Rome; country: Italy"]
    doc = load_bytes("c.json", b'{"server": {"port": 5670}, "tags": ["a", "b"]}', BIG)
    assert "server: port: 5670" in doc.text and "tags[1]: b" in doc.text


def test_clear_errors() -> None:
    with pytest.raises(UnsupportedFileError, match=r"unsupported file type '\.bmp'.*supported: .*\.pdf") as e:
        load_bytes("x.bmp", b"BM", BIG)
    assert e.value.status_code == 415
    with pytest.raises(FileTooLargeError, match="over the limit of 10 bytes") as big:
        load_bytes("x.txt", b"x" * 11, 10)
    assert big.value.status_code == 413
    with pytest.raises(DocumentParseError, match=r"broken\.pdf"):
        load_bytes("broken.pdf", b"%PDF-1.4 not a pdf", BIG)
    with pytest.raises(DocumentParseError, match="not valid JSON"):
        load_bytes("x.json", b"{nope", BIG)


def _long_text() -> str:
    return "\n\n".join(
        " ".join(f"Sentence {p}.{s} talks about topic {p} in some detail." for s in range(6)) for p in range(20)
    )


def test_size_chunks_respect_limit_and_overlap() -> None:
    doc = load_bytes("long.txt", _long_text().encode(), BIG)
    config = ChunkingConfig(strategy="size", chunk_size=64, chunk_overlap=16)
    chunks = chunk_document(doc, config)
    assert len(chunks) > 5
    for a, b in itertools.pairwise(chunks):
        assert count_tokens(a.text) <= 64
        assert b.start < a.end  # neighbours overlap
        assert doc.text[a.start : a.end] == a.text
    assert chunks[-1].end == len(doc.text)


@pytest.mark.parametrize("strategy", ["paragraph", "separator", "markdown"])
def test_other_strategies_cover_the_text(strategy: str) -> None:
    doc = load_bytes("long.txt", _long_text().encode(), BIG)
    chunks = chunk_document(doc, ChunkingConfig(strategy=strategy, chunk_size=100, chunk_overlap=10))
    assert all(count_tokens(c.text) <= 100 for c in chunks)
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence {p}.5" in joined for p in range(20))
    if strategy == "separator":
        assert len(chunks) == 20  # one per paragraph-separated piece


def test_unknown_strategy_is_refused() -> None:
    doc = load_bytes("a.txt", b"text", BIG)
    with pytest.raises(Exception, match="unknown chunking strategy 'nope'"):
        chunk_document(doc, ChunkingConfig(strategy="nope"))


def test_bm25_ranks_and_forgets() -> None:
    index = BM25Index()
    index.add([1, 2, 3], ["faiss vector index search", "the semantic cache answers", "bm25 keyword search engine"])
    assert [i for i, _ in index.search("keyword search", 3)] == [3, 1]
    assert [i for i, _ in index.search("caches answering", 3)] == [2]  # stemmed
    index.remove([3])
    assert [i for i, _ in index.search("keyword search", 3)] == [1]
    assert len(index) == 2
    assert index.search("search", 3, allow=lambda i: i != 1) == []
