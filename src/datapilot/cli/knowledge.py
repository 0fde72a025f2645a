"""``datapilot knowledge ...``: knowledge spaces, documents and questions from the command line.

Every command works on the embedded store under ``--home`` directly, or on a running server with
``--url`` (its ``/api/knowledge`` API). The embedded store belongs to one process at a time: while a
server runs on it, use ``--url``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, ServerOpt, err, out, settings_from
from datapilot.core.config import Settings
from datapilot.core.errors import DataPilotError

knowledge_app = typer.Typer(help="Knowledge spaces: add documents, ask questions with citations.", no_args_is_help=True)
space_app = typer.Typer(help="Create, list and delete knowledge spaces.", no_args_is_help=True)
knowledge_app.add_typer(space_app, name="space")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="chunking: size, paragraph, separator or markdown")]
ChunkSizeOpt = Annotated[int | None, typer.Option("--chunk-size", help="tokens per chunk at most")]
OverlapOpt = Annotated[int | None, typer.Option("--overlap", help="tokens shared by neighbouring chunks (size)")]
SeparatorOpt = Annotated[str | None, typer.Option("--separator", help="the separator string (separator strategy)")]
ModeOpt = Annotated[str, typer.Option("--mode", help="hybrid, dense or keyword")]
TopKOpt = Annotated[int | None, typer.Option("-k", "--top-k", min=1, max=100, help="passages to retrieve")]


def _chunking(strategy: str | None, size: int | None, overlap: int | None, sep: str | None) -> dict[str, Any] | None:
    given = {"strategy": strategy, "chunk_size": size, "chunk_overlap": overlap, "separator": sep}
    chosen = {k: v for k, v in given.items() if v is not None}
    return chosen or None


# two ways to reach a knowledge base: this process, or a server's REST API ------------------------------


class _Local:
    def __init__(self, settings: Settings, ray_address: str | None = None, *, ray: bool = False) -> None:
        from datapilot.rag import KnowledgeBase, KnowledgeSettings

        self.settings = settings
        address = ray_address or settings.ray.address
        if ray:
            from datapilot.runtime import connect

            # Here, in the main thread (Ray sets its signal handlers only there); the knowledge base's own
            # connect then finds this process connected.
            connect(address, settings.ray.namespace, settings.ray.num_cpus)
        self.kb = KnowledgeBase(
            KnowledgeSettings.from_settings(settings),
            settings.home,
            ray=ray,
            ray_address=address,
            ray_namespace=settings.ray.namespace,
            ray_task_cpus=settings.ray.task_num_cpus,
        )

    def run(self, work: Callable[[], Any]) -> Any:
        async def go() -> Any:
            async with self.kb:
                return await work()

        return asyncio.run(go())


class _Remote:
    def __init__(self, url: str, settings: Settings) -> None:
        self.base = url.rstrip("/").removesuffix("/v1") + "/api/knowledge"
        headers = {}
        if settings.server.api_keys:
            headers["Authorization"] = f"Bearer {settings.server.api_keys[0].get_secret_value()}"
        self.client = httpx.Client(base_url=self.base, headers=headers, timeout=600)

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise DataPilotError(f"no server answering at {self.base}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            body = {"error": {"message": resp.text}}
        if resp.status_code >= 400:
            raise DataPilotError(body.get("error", {}).get("message") or resp.text)
        return dict(body)


def _backend(url: str | None, config: Path | None, profile: str | None, home: Path | None) -> _Local | _Remote:
    settings = settings_from(config, profile, home)
    return _Remote(url, settings) if url else _Local(settings)


RayOpt = Annotated[
    bool | None,
    typer.Option(
        "--ray/--no-ray",
        help="parse, chunk and embed the documents as Ray tasks; this process still writes the stores "
        "[default: on when the settings' runtime is ray]",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="the Ray cluster (implies --ray): auto, host:6379 or ray://host:10001 "
        "[default: the settings' ray.address, else a new local Ray]",
    ),
]


def _table(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


# spaces ------------------------------------------------------------------------------------------------


@space_app.command("create")
def space_create(
    name: str,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    strategy: StrategyOpt = None,
    chunk_size: ChunkSizeOpt = None,
    overlap: OverlapOpt = None,
    separator: SeparatorOpt = None,
    url: ServerOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Create a knowledge space, optionally with its chunking."""
    chunking = _chunking(strategy, chunk_size, overlap, separator)
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        info = backend.call("POST", "/spaces", json={"name": name, "description": description, "chunking": chunking})
    else:
        from datapilot.rag import ChunkingConfig

        kb = backend.kb
        cfg = ChunkingConfig.model_validate({**kb.settings.chunking.model_dump(), **(chunking or {})})
        info = backend.run(lambda: kb.create_space(name, description, cfg)).to_dict()
    out.print(f"created space [bold]{info['name']}[/] (chunking: {json.dumps(info['chunking'])})")


@space_app.command("list")
def space_list(
    as_json: JsonOpt = False, url: ServerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:  # fmt: skip
    """List knowledge spaces with their document and chunk counts."""
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        rows = backend.call("GET", "/spaces")["data"]
    else:
        kb = backend.kb
        rows = [s.to_dict() for s in backend.run(kb.spaces)]
    for r in rows:
        r["strategy"] = r["chunking"].get("strategy")
    _table(rows, ["name", "documents", "chunks", "strategy", "description"], as_json)


@space_app.command("delete")
def space_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    url: ServerOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Delete a knowledge space with all its documents and chunks."""
    if not yes:
        typer.confirm(f"delete knowledge space {name!r} and all its documents?", abort=True)
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        backend.call("DELETE", f"/spaces/{name}")
    else:
        kb = backend.kb
        backend.run(lambda: kb.delete_space(name))
    out.print(f"deleted space [bold]{name}[/]")


# documents ---------------------------------------------------------------------------------------------


class _AddProgress:
    """Two bars: documents finished, and chunks embedded so far (as their counts become known)."""

    def __init__(self, total_docs: int) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        )
        self.docs = self.progress.add_task("documents", total=total_docs)
        self.chunks = self.progress.add_task("chunks embedded", total=None)

    def update(self, docs: list[dict[str, Any]]) -> None:
        finished = sum(1 for d in docs if d["status"] in ("done", "failed"))
        busy = [d for d in docs if d["status"] in ("parsing", "embedding")]
        label = f"documents ({busy[0]['status']} {busy[0]['source']})" if busy else "documents"
        self.progress.update(self.docs, completed=finished, description=label)
        total = sum(d["chunks"] for d in docs if d["status"] in ("embedding", "done"))
        done = sum(d["chunks_done"] if d["status"] == "embedding" else d["chunks"] for d in docs if d["status"] in (
            "embedding", "done"))  # fmt: skip
        self.progress.update(self.chunks, completed=done, total=total or None)


def _report_add(docs: list[dict[str, Any]], skipped: list[tuple[str, str]], elapsed: float) -> None:
    ok = [d for d in docs if d["status"] == "done"]
    failed = [d for d in docs if d["status"] == "failed"]
    unchanged = [d for d in ok if d.get("unchanged")]
    chunks = sum(d["chunks"] for d in ok if not d.get("unchanged"))
    for d in failed:
        err.print(f"[red]failed[/] {d['source']}: {d['error']}", highlight=False)
    for source, why in skipped:
        err.print(f"[yellow]skipped[/] {source}: {why}", highlight=False)
    out.print(
        f"{len(ok)} document(s) ready ({len(unchanged)} unchanged), {chunks} chunk(s) added, "
        f"{len(failed)} failed, {len(skipped)} skipped, in {elapsed:.1f} s"
    )


@knowledge_app.command("add")
def add(
    space: str,
    path: Annotated[Path, typer.Argument(help="a file or a folder (read recursively)")],
    metadata: Annotated[str | None, typer.Option("--metadata", help="JSON stored with each document")] = None,
    strategy: StrategyOpt = None,
    chunk_size: ChunkSizeOpt = None,
    overlap: OverlapOpt = None,
    separator: SeparatorOpt = None,
    ray: RayOpt = None,
    ray_address: RayAddressOpt = None,
    url: ServerOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Add a file or a folder of documents to a space, with a progress bar. Unchanged files are skipped.

    With --ray each document is parsed, chunked and embedded by Ray tasks (the embedder loaded once per Ray
    worker), and the chunks are written here; a document that fails still fails alone."""
    meta = json.loads(metadata) if metadata else None
    chunking = _chunking(strategy, chunk_size, overlap, separator)
    if ray is False and ray_address is not None:
        raise DataPilotError("--ray-address is for --ray, not --no-ray")
    if url:
        if ray or ray_address is not None:
            raise DataPilotError("--ray is for the embedded store; a server at --url ingests documents itself")
        backend: _Local | _Remote = _Remote(url, settings_from(config, profile, home))
    else:
        settings = settings_from(config, profile, home)
        on_ray = ray if ray is not None else ray_address is not None or settings.runtime == "ray"
        backend = _Local(settings, ray_address, ray=on_ray)
    started = time.perf_counter()
    if isinstance(backend, _Remote):
        docs, skipped = _add_remote(backend, space, path, meta, chunking)
    else:
        docs, skipped = _add_local(backend, space, path, meta, chunking)
    _report_add(docs, skipped, time.perf_counter() - started)
    if docs and all(d["status"] == "failed" for d in docs):
        raise typer.Exit(1)


def _add_local(
    backend: _Local, space: str, path: Path, meta: dict[str, Any] | None, chunking: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from datapilot.rag import ChunkingConfig

    kb = backend.kb

    async def work() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        cfg = None
        if chunking:
            base = (await kb.space(space)).chunking
            cfg = ChunkingConfig.model_validate({**base, **chunking})
        result = await kb.add_path(space, path, metadata=meta, chunking=cfg)
        unchanged = {d.id for d in result.documents if d.unchanged}
        bar = _AddProgress(len(result.documents))
        with bar.progress:
            docs = await kb.wait(
                space, [d.id for d in result.documents], lambda ds: bar.update([d.to_dict() for d in ds])
            )
        rows = [{**d.to_dict(), "unchanged": d.id in unchanged} for d in docs]
        return rows, result.skipped

    result: tuple[list[dict[str, Any]], list[tuple[str, str]]] = backend.run(work)
    return result


def _add_remote(
    backend: _Remote, space: str, path: Path, meta: dict[str, Any] | None, chunking: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from datapilot.rag import supported_extensions

    path = path.expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))  # fmt: skip
        root = path
    elif path.is_file():
        files, root = [path], path.parent
    else:
        raise DataPilotError(f"{path}: no such file or folder")
    form: dict[str, str] = {}
    if meta:
        form["metadata"] = json.dumps(meta)
    if chunking:
        form["chunking"] = json.dumps(chunking)
    docs: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    known = set(supported_extensions())
    with err.status(f"uploading {len(files)} file(s) ..."):
        for file in files:
            rel = str(file.relative_to(root))
            if file.suffix.lower() not in known and path.is_dir():
                skipped.append((rel, f"unsupported file type {file.suffix or '(no extension)'!r}"))
                continue
            try:
                body = backend.call(
                    "POST", f"/spaces/{space}/documents", files={"files": (rel, file.read_bytes())}, data=form
                )
            except DataPilotError as exc:
                if not path.is_dir():
                    raise
                skipped.append((rel, exc.message))
                continue
            docs.extend(body["data"])
    unchanged = {d["id"] for d in docs if d.get("unchanged")}
    bar = _AddProgress(len(docs))
    with bar.progress:
        while True:
            docs = [backend.call("GET", f"/spaces/{space}/documents/{d['id']}") for d in docs]
            bar.update(docs)
            if all(d["status"] in ("done", "failed") for d in docs):
                break
            time.sleep(0.3)
    return [{**d, "unchanged": d["id"] in unchanged} for d in docs], skipped


@knowledge_app.command("docs")
def docs(
    space: str, as_json: JsonOpt = False, url: ServerOpt = None, config: ConfigOpt = None,
    profile: ProfileOpt = None, home: HomeOpt = None,
) -> None:  # fmt: skip
    """List a space's documents with their ingestion status."""
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        rows = backend.call("GET", f"/spaces/{space}/documents")["data"]
    else:
        kb = backend.kb
        rows = [d.to_dict() for d in backend.run(lambda: kb.documents(space))]
    _table(rows, ["id", "source", "kind", "status", "chunks", "bytes", "error"], as_json)


@knowledge_app.command("chunks")
def chunks(
    space: str, doc_id: str,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: JsonOpt = False, url: ServerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:  # fmt: skip
    """Show a document's chunks with page, section and character offsets."""
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        rows = backend.call("GET", f"/spaces/{space}/documents/{doc_id}/chunks", params={"offset": offset,
                            "limit": limit})["data"]  # fmt: skip
    else:
        kb = backend.kb
        rows = [c.to_dict() for c in backend.run(lambda: kb.chunks(space, doc_id, offset, limit))]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    for r in rows:
        where = ", ".join(x for x in (f"page {r['page']}" if r["page"] else "", r["section"] or "") if x)
        out.print(f"[bold]#{r['seq']}[/] [dim]{r['start']}-{r['end']} {where}[/]", highlight=False)
        out.print(r["text"], markup=False, highlight=False)
        out.print()


@knowledge_app.command("delete-doc")
def delete_doc(
    space: str, doc_id: str, url: ServerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:  # fmt: skip
    """Delete a document and its chunks from the store and every index."""
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        removed = backend.call("DELETE", f"/spaces/{space}/documents/{doc_id}")["chunks"]
    else:
        kb = backend.kb
        removed = backend.run(lambda: kb.delete_document(space, doc_id))
    out.print(f"deleted document {doc_id} ({removed} chunk(s))")


# questions ---------------------------------------------------------------------------------------------


@knowledge_app.command("query")
def query(
    space: str, text: str, k: TopKOpt = None, mode: ModeOpt = "hybrid", as_json: JsonOpt = False,
    url: ServerOpt = None, config: ConfigOpt = None, profile: ProfileOpt = None, home: HomeOpt = None,
) -> None:  # fmt: skip
    """Retrieve the passages that best match TEXT, without asking a model."""
    backend = _backend(url, config, profile, home)
    if isinstance(backend, _Remote):
        rows = backend.call("POST", f"/spaces/{space}/query", json={"query": text, "k": k, "mode": mode})["data"]
    else:
        kb = backend.kb
        rows = [p.to_dict() for p in backend.run(lambda: kb.retrieve(space, text, k=k, mode=mode))]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    for n, r in enumerate(rows, 1):
        _print_passage(n, r["source"], r["page"], r["section"], r["text"], r["score"])


def _print_passage(n: int, source: str, page: int | None, section: str | None, text: str, score: float) -> None:
    where = ", ".join(x for x in (source, f"page {page}" if page else "", section or "") if x)
    snippet = " ".join(text.split())
    out.print(f"[bold][{n}][/] {where} [dim](score {score:.4f})[/]", highlight=False, markup=True)
    out.print(f"    {snippet[:300]}{' ...' if len(snippet) > 300 else ''}", markup=False, highlight=False)


@knowledge_app.command("ask")
def ask(
    space: str,
    question: str,
    model: Annotated[str | None, typer.Option("--model", "-m", help="chat model [default: the configured one]")] = None,
    k: TopKOpt = None,
    mode: ModeOpt = "hybrid",
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    as_json: JsonOpt = False,
    url: ServerOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Answer QUESTION from a space's documents, streaming, then list the cited passages."""
    backend = _backend(url, config, profile, home)
    events = _ask_remote(backend, space, question, model, k, mode, max_tokens) if isinstance(
        backend, _Remote) else None  # fmt: skip
    if events is not None:
        _print_answer(events, as_json)
        return
    assert isinstance(backend, _Local)
    _ask_local(backend, space, question, model, k, mode, max_tokens, as_json)


def _print_answer(events: Any, as_json: bool) -> None:
    final: dict[str, Any] = {}
    for event in events:
        if event.get("error"):
            raise DataPilotError(event["error"].get("message", "the knowledge chat failed"))
        if event["type"] == "delta" and not as_json:
            out.print(event["text"], end="", markup=False, highlight=False)
        elif event["type"] == "done":
            final = event
    if as_json:
        out.print_json(json.dumps(final))
        return
    out.print()
    citations = final.get("citations", [])
    if citations:
        out.print("\n[bold]Sources[/]" + (" (cited: " + ", ".join(f"[{n}]" for n in final["cited"]) + ")"
                                          if final.get("cited") else ""), highlight=False)  # fmt: skip
        for c in citations:
            _print_passage(c["number"], c["source"], c["page"], c["section"], c["text"], c["score"])


def _ask_remote(
    backend: _Remote, space: str, question: str, model: str | None, k: int | None, mode: str, max_tokens: int
) -> Any:
    body = {"question": question, "model": model, "k": k, "mode": mode, "max_tokens": max_tokens, "stream": True}
    try:
        with backend.client.stream("POST", f"/spaces/{space}/chat", json=body) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise DataPilotError(resp.json().get("error", {}).get("message") or resp.text)
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    yield json.loads(line[6:])
    except httpx.HTTPError as exc:
        raise DataPilotError(f"no server answering at {backend.base}: {exc}") from None


def _ask_local(
    backend: _Local, space: str, question: str, model: str | None, k: int | None, mode: str, max_tokens: int,
    as_json: bool,
) -> None:  # fmt: skip
    from datapilot.cli._progress import model_progress
    from datapilot.core.types import SamplingParams
    from datapilot.models.manager import ModelManager
    from datapilot.rag import knowledge_chat

    kb = backend.kb
    name = model or kb.settings.chat_model
    cfg = backend.settings.model(name)
    if cfg is None:
        known = ", ".join(m.name for m in backend.settings.models)
        raise DataPilotError(f"model {name!r} is not configured (configured: {known}); or pass --url")
    params = SamplingParams(max_tokens=max_tokens, temperature=0.2)

    async def events() -> AsyncIterator[dict[str, Any]]:
        manager = ModelManager([cfg], backend.settings.home)
        with model_progress(err, [cfg.name]) as progress:
            await manager.start(progress)
        try:
            manager.worker(name).require("chat")
            async for event in knowledge_chat(kb, manager, space, question, model=name, k=k, mode=mode, params=params):
                yield event.to_dict()
        finally:
            await manager.close()

    async def work() -> None:
        collected: list[dict[str, Any]] = []
        async for event in events():
            if event["type"] == "delta" and not as_json:
                out.print(event["text"], end="", markup=False, highlight=False)
            collected.append(event)
        _print_answer([{**e, "type": "_seen"} if e["type"] == "delta" else e for e in collected], as_json)

    backend.run(work)
