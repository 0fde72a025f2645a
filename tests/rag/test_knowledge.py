"""The knowledge base as a library: spaces, ingestion, no-op re-adds, replacement, deletion from every
index, filters, the knowledge chat and the AWEL operator. A hashed bag-of-words embedder and the
scripted model keep these fast; the real models are used in test_knowledge_server.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from datapilot.awel import DAG, InputOperator, Retrieved
from datapilot.cache import HashEmbedder
from datapilot.core import ConflictError, ModelConfig
from datapilot.models import ModelManager
from datapilot.rag import (
    ChunkingConfig,
    DocumentInfo,
    IngestStatus,
    KnowledgeBase,
    KnowledgeRetrieveOperator,
    KnowledgeSettings,
    SpaceNotFoundError,
    UnsupportedFileError,
    answer_question,
    knowledge_chat,
)

SCOPE = "knowledge/"


@pytest.fixture
async def kb(tmp_path: Path) -> AsyncIterator[KnowledgeBase]:
    async with KnowledgeBase(KnowledgeSettings(), tmp_path / "home", embedder=HashEmbedder(256)) as base:
        yield base


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ModelManager]:
    models = [
        ModelConfig(name="cite", backend="scripted", params={"replies": ["Turbines are covered on page one [1]."]}),
        ModelConfig(name="ranker", backend="scripted"),
    ]
    mgr = ModelManager(models, tmp_path / "models")
    await mgr.start()
    yield mgr
    await mgr.close()


def _indexed(kb: KnowledgeBase, space: str, chunk_ids: list[int]) -> dict[str, bool]:
    """Where each of ``chunk_ids`` still is: the store, the BM25 index, the vector index."""
    state = kb._spaces[space]
    in_store = bool(kb.store.chunks_by_id(chunk_ids))
    in_bm25 = any(i in state.bm25 for i in chunk_ids)
    vectors = kb._vectors
    total = vectors.count(SCOPE + space)
    probe = np.ones(256, dtype=np.float32) / 16.0
    found = set(vectors.search(SCOPE + space, probe, max(total, 1))[0])
    return {"store": in_store, "bm25": in_bm25, "dense": bool(found & set(chunk_ids))}


async def test_spaces(kb: KnowledgeBase) -> None:
    await kb.create_space("team", "our docs", ChunkingConfig(strategy="paragraph", chunk_size=80, chunk_overlap=0))
    with pytest.raises(ConflictError):
        await kb.create_space("team")
    with pytest.raises(Exception, match="invalid space name"):
        await kb.create_space("no spaces allowed")
    spaces = await kb.spaces()
    assert [(s.name, s.description, s.chunking["strategy"]) for s in spaces] == [("team", "our docs", "paragraph")]
    await kb.delete_space("team")
    assert await kb.spaces() == []
    with pytest.raises(SpaceNotFoundError):
        await kb.retrieve("team", "anything")


async def test_folder_of_mixed_documents(kb: KnowledgeBase, mixed_folder: Path) -> None:
    await kb.create_space("docs", chunking=ChunkingConfig(strategy="markdown"))
    seen: set[str] = set()

    def progress(docs: list[DocumentInfo]) -> None:
        seen.update(str(d.status) for d in docs)

    result = await kb.add("docs", mixed_folder, on_progress=progress)
    by_source = {d.source: d for d in result.documents}
    assert set(by_source) == {
        "guide.md", "notes.txt", "release.html", "nested/cities.csv", "nested/config.json", "manual.pdf",
        "handbook.docx", "broken.pdf",
    }  # fmt: skip
    assert result.skipped == [("image.bmp", "unsupported file type '.bmp'")]
    broken = by_source.pop("broken.pdf")
    assert broken.status == IngestStatus.FAILED and "broken.pdf" in (broken.error or "")
    assert all(d.status == IngestStatus.DONE and d.chunks > 0 for d in by_source.values())
    assert {"done", "failed"} <= seen

    pdf = by_source["manual.pdf"]
    chunks = await kb.chunks("docs", pdf.id)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "Page one is about turbines."),
        (2, "Page two covers the gearbox."),
    ]

    hits = await kb.retrieve("docs", "gearbox", k=3)
    assert hits[0].source == "manual.pdf" and hits[0].chunk.page == 2
    hits = await kb.retrieve("docs", "how many vacation days", k=3)
    assert hits[0].source == "handbook.docx" and hits[0].chunk.section == "Handbook > Vacation"
    # filters: by document, by metadata (kind), by chunk location (page)
    only_pdf = await kb.retrieve("docs", "turbines gearbox cache", k=5, metadata={"kind": "pdf"})
    assert {p.source for p in only_pdf} == {"manual.pdf"}
    page2 = await kb.retrieve("docs", "turbines gearbox", k=5, metadata={"page": 2})
    assert [p.chunk.page for p in page2] == [2]
    docs_filter = await kb.retrieve("docs", "questions", k=5, documents=[by_source["guide.md"].id])
    assert {p.source for p in docs_filter} == {"guide.md"}
    for mode in ("dense", "keyword"):
        assert (await kb.retrieve("docs", "turbines", k=1, mode=mode))[0].source == "manual.pdf"


async def test_readd_unchanged_is_noop_changed_replaces(kb: KnowledgeBase, tmp_path: Path) -> None:
    await kb.create_space("s")
    path = tmp_path / "faq.md"
    path.write_text("# FAQ\n\nThe answer is forty-two.\n")
    first = (await kb.add("s", path)).documents[0]
    old_ids = [c.id for c in await kb.chunks("s", first.id)]
    again = (await kb.add("s", path)).documents[0]
    assert again.unchanged and again.id == first.id
    assert [c.id for c in await kb.chunks("s", first.id)] == old_ids  # nothing re-embedded

    path.write_text("# FAQ\n\nThe answer is now seventeen.\n")
    changed = (await kb.add("s", path)).documents[0]
    assert not changed.unchanged and changed.id == first.id and changed.status == IngestStatus.DONE
    new = await kb.chunks("s", first.id)
    assert "seventeen" in new[0].text and not set(old_ids) & {c.id for c in new}
    assert _indexed(kb, "s", old_ids) == {"store": False, "bm25": False, "dense": False}
    assert len(await kb.documents("s")) == 1
    hits = await kb.retrieve("s", "forty-two")
    assert all("forty-two" not in h.chunk.text for h in hits)


async def test_delete_document_removes_it_from_every_index(kb: KnowledgeBase, mixed_folder: Path) -> None:
    await kb.create_space("docs")
    result = await kb.add("docs", mixed_folder)
    notes = next(d for d in result.documents if d.source == "notes.txt")
    ids = [c.id for c in await kb.chunks("docs", notes.id)]
    assert ids and _indexed(kb, "docs", ids) == {"store": True, "bm25": True, "dense": True}
    assert (await kb.retrieve("docs", "office plant watered", k=1))[0].source == "notes.txt"

    removed = await kb.delete_document("docs", notes.id)
    assert removed == len(ids)
    assert _indexed(kb, "docs", ids) == {"store": False, "bm25": False, "dense": False}
    for mode in ("hybrid", "dense", "keyword"):
        hits = await kb.retrieve("docs", "office plant watered on Mondays", k=10, mode=mode)
        assert all(h.source != "notes.txt" for h in hits)
    assert notes.id not in {d.id for d in await kb.documents("docs")}


async def test_reopen_rebuilds_indexes(tmp_path: Path, mixed_folder: Path) -> None:
    settings = KnowledgeSettings()
    async with KnowledgeBase(settings, tmp_path / "h", embedder=HashEmbedder(256)) as kb:
        await kb.create_space("docs")
        await kb.add("docs", mixed_folder / "guide.md")
    async with KnowledgeBase(settings, tmp_path / "h", embedder=HashEmbedder(256)) as kb:
        for mode in ("dense", "keyword"):
            hits = await kb.retrieve("docs", "semantic cache repeated questions", k=1, mode=mode)
            assert hits and "semantic cache" in hits[0].chunk.text


async def test_errors_for_single_files(kb: KnowledgeBase, tmp_path: Path) -> None:
    await kb.create_space("s")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(UnsupportedFileError):
        await kb.add("s", tmp_path / "x.bmp")
    small = KnowledgeBase(KnowledgeSettings(max_file_bytes=10), tmp_path / "h2", embedder=HashEmbedder())
    async with small:
        await small.create_space("s")
        (tmp_path / "big.txt").write_text("x" * 100)
        with pytest.raises(Exception, match="over the limit of 10 bytes"):
            await small.add("s", tmp_path / "big.txt")
    with pytest.raises(Exception, match="no such file or folder"):
        await kb.add("s", tmp_path / "missing")


async def test_ingestion_runs_in_the_background(kb: KnowledgeBase) -> None:
    """Adding answers at once with ``queued``; the event loop stays free while documents are processed."""
    await kb.create_space("s", chunking=ChunkingConfig(chunk_size=32, chunk_overlap=0))
    text = "\n\n".join(f"Paragraph {i} mentions item{i} and more words to fill it." for i in range(3000))
    doc = await kb.add_text("s", "big.txt", text)
    assert doc.status == IngestStatus.QUEUED
    ticks, longest = 0, 0.0
    while (await kb.document("s", doc.id)).status != IngestStatus.DONE:
        t0 = asyncio.get_running_loop().time()
        await asyncio.sleep(0.01)
        longest = max(longest, asyncio.get_running_loop().time() - t0)
        ticks += 1
    # The loop keeps turning while the document is processed: many ticks, none of them long (a loop
    # blocked by ingestion would give one tick as long as the whole ingestion). The bound leaves room
    # for a loaded CI machine, where one 10 ms sleep has been seen to take 0.5 s.
    assert ticks > 5 and longest < 1.5
    assert "Paragraph 2999 " in (await kb.retrieve("s", "item2999", k=1, mode="keyword"))[0].chunk.text


async def test_knowledge_chat_streams_answer_and_citations(
    tmp_path: Path, manager: ModelManager, mixed_folder: Path
) -> None:
    kb = KnowledgeBase(KnowledgeSettings(), tmp_path / "h", embedder=HashEmbedder(256), rerank_client=manager)
    await kb.open()
    await kb.create_space("docs")
    await kb.add("docs", mixed_folder)
    events = [e async for e in knowledge_chat(kb, manager, "docs", "What is page one about?", model="cite", k=3)]
    assert events[0].type == "citations" and events[-1].type == "done"
    assert "".join(e.text for e in events if e.type == "delta") == events[-1].text
    done = events[-1]
    assert done.text == "Turbines are covered on page one [1]." and done.cited == [1]
    assert [c.number for c in done.citations] == [1, 2, 3]
    first = done.citations[0]
    assert first.cited and first.source == "manual.pdf" and first.page == 1 and "turbines" in first.text
    assert not done.citations[1].cited

    answer = await answer_question(kb, manager, "docs", "What is page one about?", model="cite", rerank="ranker")
    assert answer.cited == [1] and answer.citations[0].document_id
    nothing = await answer_question(kb, manager, "docs", "zzzz qqqq", model="cite", mode="keyword")
    assert nothing.citations == [] and "found nothing" in nothing.answer
    await kb.close()


async def test_retrieval_is_an_awel_operator(kb: KnowledgeBase, mixed_folder: Path) -> None:
    await kb.create_space("docs")
    await kb.add("docs", mixed_folder)
    with DAG("knowledge_flow") as dag:
        InputOperator() >> KnowledgeRetrieveOperator("docs", k=2, knowledge=kb)
    out = await dag.run({"question": "gearbox"})
    assert isinstance(out, Retrieved)
    assert out.documents[0].metadata["source"] == "manual.pdf" and out.documents[0].metadata["page"] == 2
    # the operator serialises by its registered name, without the (run-time) knowledge base
    assert '"knowledge_retrieve"' in dag.to_json()
