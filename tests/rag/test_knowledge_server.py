"""Knowledge through the real server (``datapilot start`` with Gemma, MiniLM and scripted models) and
the ``datapilot knowledge`` CLI: uploads with statuses, retrieval and answers with citations, deletion,
and a server that keeps answering while it ingests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server

TIMEOUT = 120


def _space(srv: Server, chunking: dict[str, Any] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    resp = httpx.post(f"{srv.url}/api/knowledge/spaces", json={"name": name, "chunking": chunking}, timeout=10)
    assert resp.status_code == 201, resp.text
    return name


def _upload(srv: Server, space: str, folder: Path, names: list[str]) -> httpx.Response:
    files = [("files", (n, (folder / n).read_bytes())) for n in names]
    return httpx.post(f"{srv.url}/api/knowledge/spaces/{space}/documents", files=files, timeout=30)


def _wait(srv: Server, space: str, ids: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        docs = [httpx.get(f"{srv.url}/api/knowledge/spaces/{space}/documents/{i}", timeout=10).json() for i in ids]
        if all(d["status"] in ("done", "failed") for d in docs):
            return docs
        time.sleep(0.2)
    raise AssertionError(f"ingestion did not finish: {docs}")


def _sse(resp: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_rest_upload_query_chat_delete(server: Server, mixed_folder: Path) -> None:
    space = _space(server, {"strategy": "markdown"})
    names = ["guide.md", "manual.pdf", "handbook.docx", "release.html", "broken.pdf", "image.bmp"]
    resp = _upload(server, space, mixed_folder, names)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert [e["file"] for e in body["errors"]] == ["image.bmp"]
    assert body["errors"][0]["error"]["code"] == "unsupported_file_type"
    assert {d["status"] for d in body["data"]} <= {"queued", "parsing", "embedding", "done"}
    docs = {d["source"]: d for d in _wait(server, space, [d["id"] for d in body["data"]])}
    assert docs["broken.pdf"]["status"] == "failed" and "broken.pdf" in docs["broken.pdf"]["error"]
    assert all(d["status"] == "done" for s, d in docs.items() if s != "broken.pdf")

    listed = httpx.get(f"{server.url}/api/knowledge/spaces/{space}/documents", timeout=10).json()["data"]
    assert len(listed) == 5
    chunks = httpx.get(
        f"{server.url}/api/knowledge/spaces/{space}/documents/{docs['manual.pdf']['id']}/chunks", timeout=10
    ).json()["data"]
    assert [c["page"] for c in chunks] == [1, 2]

    # real MiniLM embeddings: a paraphrase with no shared keyword still finds the passage
    found = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/query", json={"query": "annual leave allowance", "mode": "dense"},
        timeout=30,
    ).json()  # fmt: skip
    assert found["data"][0]["source"] == "handbook.docx"
    hybrid = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/query", json={"query": "What does page two cover?", "k": 2},
        timeout=30,
    ).json()["data"]  # fmt: skip
    assert hybrid[0]["source"] == "manual.pdf" and hybrid[0]["page"] == 2

    # the knowledge chat, streamed (scripted model: fast and exact)
    resp = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/chat",
        json={"question": "What does the gearbox page say?", "model": "echo", "k": 2},
        timeout=60,
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _sse(resp)
    assert events[0]["type"] == "citations" and events[-1]["type"] == "done"
    assert [c["number"] for c in events[0]["citations"]] == [1, 2]
    assert events[0]["citations"][0]["source"] == "manual.pdf"
    assert "".join(e["text"] for e in events if e["type"] == "delta") == events[-1]["answer"]

    # delete a document: gone from the listing and from every retriever
    pdf_id = docs["manual.pdf"]["id"]
    deleted = httpx.delete(f"{server.url}/api/knowledge/spaces/{space}/documents/{pdf_id}", timeout=10).json()
    assert deleted == {"id": pdf_id, "deleted": True, "chunks": 2}
    for mode in ("hybrid", "dense", "keyword"):
        hits = httpx.post(
            f"{server.url}/api/knowledge/spaces/{space}/query",
            json={"query": "turbines gearbox page", "mode": mode, "k": 10},
            timeout=30,
        ).json()["data"]
        assert all(h["source"] != "manual.pdf" for h in hits)
    missing = httpx.get(f"{server.url}/api/knowledge/spaces/{space}/documents/{pdf_id}", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "document_not_found"
    assert httpx.delete(f"{server.url}/api/knowledge/spaces/{space}", timeout=10).json()["deleted"] is True


def test_rest_errors(server: Server, tmp_path: Path) -> None:
    space = _space(server)
    again = httpx.post(f"{server.url}/api/knowledge/spaces", json={"name": space}, timeout=10)
    assert again.status_code == 409
    (tmp_path / "x.exe").write_bytes(b"MZ")
    resp = _upload(server, space, tmp_path, ["x.exe"])
    assert resp.status_code == 415 and "unsupported file type '.exe'" in resp.json()["error"]["message"]
    nope = httpx.post(f"{server.url}/api/knowledge/spaces/nope-{space}/query", json={"query": "x"}, timeout=10)
    assert nope.status_code == 404 and nope.json()["error"]["code"] == "space_not_found"
    bad = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/query", json={"query": "x", "mode": "fuzzy"}, timeout=10
    )
    assert bad.status_code == 400


def test_server_answers_while_ingesting(server: Server) -> None:
    space = _space(server, {"strategy": "size", "chunk_size": 48, "chunk_overlap": 0})
    text = "\n\n".join(f"Section {i}: the reactor {i} needs coolant check number {i * 7}." for i in range(2500))
    resp = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/documents/text", json={"name": "big.txt", "text": text}, timeout=30
    )
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    doc_id = resp.json()["id"]
    answered_during = 0
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/api/knowledge/spaces/{space}/documents/{doc_id}", timeout=10).json()
        if status["status"] == "done":
            break
        t0 = time.perf_counter()
        chat = httpx.post(
            f"{server.v1}/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "still there?"}]},
            timeout=10,
        )
        assert chat.status_code == 200 and time.perf_counter() - t0 < 2.0
        if status["status"] == "embedding":
            answered_during += 1
            assert 0 <= status["chunks_done"] <= status["chunks"]
        time.sleep(0.1)
    assert status["status"] == "done", status
    assert answered_during >= 1  # requests were answered while it was embedding
    httpx.delete(f"{server.url}/api/knowledge/spaces/{space}", timeout=10)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datapilot", "knowledge", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_cli_against_server(server: Server, mixed_folder: Path) -> None:
    space = f"cli-{uuid.uuid4().hex[:8]}"
    made = _cli("space", "create", space, "--strategy", "markdown", "--url", server.url)
    assert made.returncode == 0, made.stderr
    added = _cli("add", space, str(mixed_folder), "--url", server.url)
    assert added.returncode == 0, added.stderr
    assert "7 document(s) ready" in added.stdout and "1 failed" in added.stdout and "1 skipped" in added.stdout
    assert "chunks embedded" in added.stderr  # the progress bar
    again = _cli("add", space, str(mixed_folder), "--url", server.url)
    assert "(7 unchanged), 0 chunk(s) added" in again.stdout
    docs = _cli("docs", space, "--json", "--url", server.url)
    rows = json.loads(docs.stdout)
    assert len(rows) == 8
    asked = _cli("ask", space, "How many vacation days do employees get?", "--model", "echo", "--url", server.url)
    assert asked.returncode == 0, asked.stderr
    assert "Sources" in asked.stdout and "[1] handbook.docx" in asked.stdout
    doc_id = next(r["id"] for r in rows if r["source"] == "handbook.docx")
    shown = _cli("chunks", space, doc_id, "--url", server.url)
    assert "Handbook > Vacation" in shown.stdout
    gone = _cli("delete-doc", space, doc_id, "--url", server.url)
    assert gone.returncode == 0 and "deleted document" in gone.stdout
    bad = _cli("ask", f"no-{space}", "q", "--url", server.url)
    assert bad.returncode == 1 and "does not exist" in bad.stderr


@pytest.mark.slow
def test_answer_with_the_embedded_model(server: Server, mixed_folder: Path) -> None:
    """Gemma 3 270M answers from the passages through REST and the CLI; the citations come with it."""
    space = _space(server, {"strategy": "markdown"})
    body = _upload(server, space, mixed_folder, ["guide.md", "handbook.docx"]).json()
    _wait(server, space, [d["id"] for d in body["data"]])
    resp = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/chat",
        json={"question": "How many vacation days do employees get per year?", "stream": False, "k": 2},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["answer"].strip() and answer["finish_reason"] in ("stop", "length")
    assert answer["citations"][0]["source"] == "handbook.docx"
    assert "twenty-five" in answer["citations"][0]["text"]
    asked = _cli("ask", space, "What does the semantic cache do?", "--url", server.url)
    assert asked.returncode == 0, asked.stderr
    assert "Sources" in asked.stdout and "guide.md" in asked.stdout


@pytest.mark.slow
def test_cli_embedded_store(tmp_path: Path, mixed_folder: Path) -> None:
    """Without --url the CLI works on the store under --home, with the bundled MiniLM in-process."""
    home = str(tmp_path / "home")
    assert _cli("space", "create", "docs", "--home", home, cwd=tmp_path).returncode == 0
    added = _cli("add", "docs", str(mixed_folder), "--home", home, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "7 document(s) ready" in added.stdout and "failed broken.pdf" in added.stderr
    listed = _cli("space", "list", "--json", "--home", home, cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["documents"] == 8
    found = _cli("query", "docs", "annual leave allowance", "--json", "--home", home, cwd=tmp_path)
    assert json.loads(found.stdout)[0]["source"] == "handbook.docx"


def test_knowledge_scene_of_api_chat(server: Server) -> None:
    space = _space(server)
    text = "The warehouse in Lyon ships orders every Tuesday.\n\nRefunds are paid within ten days."
    resp = httpx.post(
        f"{server.url}/api/knowledge/spaces/{space}/documents/text",
        json={"name": "policy.txt", "text": text},
        timeout=30,
    )
    assert resp.status_code == 202
    assert _wait(server, space, [resp.json()["id"]])[0]["status"] == "done"
    scenes = httpx.get(f"{server.url}/api/chat/scenes", timeout=10).json()["data"]
    assert "knowledge" in scenes and "data" in scenes
    body = {"scene": "knowledge", "space": space, "question": "When does the Lyon warehouse ship?", "model": "echo"}
    whole = httpx.post(f"{server.url}/api/chat", json=body, timeout=60)
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert answer["scene"] == "knowledge" and answer["answer"]
    assert any("Tuesday" in c["text"] for c in answer["citations"])
    events = _sse(httpx.post(f"{server.url}/api/chat", json={**body, "stream": True}, timeout=60))
    assert events[0]["type"] == "citations" and events[-1]["type"] == "done"
    assert all(e["scene"] == "knowledge" for e in events)
    missing = httpx.post(f"{server.url}/api/chat", json={**body, "space": None}, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "space"
    unknown = httpx.post(f"{server.url}/api/chat", json={**body, "space": f"nope-{space}", "stream": True}, timeout=10)
    assert unknown.status_code == 404
    httpx.delete(f"{server.url}/api/knowledge/spaces/{space}", timeout=10)
