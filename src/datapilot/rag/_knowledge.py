"""``KnowledgeBase``: knowledge spaces, background ingestion and hybrid retrieval, as a library.

Rows live in SQLite (``KnowledgeStore``); each space has a BM25 index in memory and a collection in
the ``VectorIndex`` (faiss embedded, Milvus when configured), both rebuilt from the rows on open.

Ingestion is a queue served by background tasks: parsing and chunking run in worker threads, and the
embedder runs in its own thread, so the event loop (and every other request) keeps answering. With
``ray=True`` parsing, chunking and each embedding batch run as Ray tasks instead (``_ingest_ray``: the
embedder built once per Ray worker process), and this process still writes every store. A
document moves queued → parsing → embedding → done (or failed, with the reason). Re-adding the same
content with the same chunking is a no-op; changed content replaces the old chunks in one swap, and
the old chunks stay searchable until then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from datapilot.core.audit import audit_note
from datapilot.core.client import EmbeddingClient
from datapilot.core.errors import ConfigError, DataPilotError, InvalidRequestError
from datapilot.core.types import RerankOutput
from datapilot.rag._bm25 import BM25Index
from datapilot.rag._chunking import check_chunking, chunk_document
from datapilot.rag._config import ChunkingConfig, KnowledgeSettings
from datapilot.rag._errors import DocumentNotFoundError, SpaceNotFoundError
from datapilot.rag._ingest_ray import RayIngestion
from datapilot.rag._loaders import check_size, discover, kind_of, load_bytes
from datapilot.rag._store import KnowledgeStore
from datapilot.rag._types import ChunkDraft, ChunkInfo, DocumentInfo, IngestStatus, Passage, SpaceInfo
from datapilot.retrieval import Embedder, EmbedderContext, FaissIndex, MilvusIndex, VectorIndex, make_embedder

log = logging.getLogger("datapilot.rag")

RetrievalMode = Literal["hybrid", "dense", "keyword"]
MODES: tuple[str, ...] = ("hybrid", "dense", "keyword")
_SPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCOPE = "knowledge/"


class RerankClient(Protocol):
    async def rerank(self, model: str, query: str, documents: list[str]) -> RerankOutput: ...


ProgressCallback = Callable[[list[DocumentInfo]], None]


@dataclass(slots=True)
class AddResult:
    """What an add queued (or found unchanged), and the files of a folder it skipped, with why."""

    documents: list[DocumentInfo]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    doc_id: str
    space: str
    source: str
    chunking: ChunkingConfig
    content_hash: str
    path: Path | None = None
    data: bytes | None = None


@dataclass(slots=True)
class _SpaceIndex:
    bm25: BM25Index = field(default_factory=BM25Index)
    chunk_doc: dict[int, str] = field(default_factory=dict)
    chunk_loc: dict[int, tuple[int | None, str | None]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _hash(data: bytes, chunking: ChunkingConfig) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps(chunking.model_dump(), sort_keys=True).encode())
    return h.hexdigest()


def _signature(ids: list[int]) -> tuple[int, int, int]:
    return (len(ids), max(ids, default=0), sum(ids) % (1 << 62))


def _matches(meta: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, want in wanted.items():
        have = meta.get(key)
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


class KnowledgeBase:
    """Spaces, documents, ingestion and retrieval. ``async with KnowledgeBase(settings, home) as kb:``.

    ``ray=True``: documents are parsed, chunked and embedded by Ray tasks on the cluster at
    ``ray_address`` (None: the Ray this process is connected to, else a new local one), the embedder
    built from ``settings.embedder`` in each Ray worker; this process keeps the stores and the queries.
    """

    def __init__(
        self,
        settings: KnowledgeSettings | None = None,
        home: Path | str = "~/.datapilot",
        *,
        embedder: Embedder | None = None,
        index: VectorIndex | None = None,
        rerank_client: RerankClient | None = None,
        local_client: EmbeddingClient | None = None,
        ray: bool = False,
        ray_address: str | None = None,
        ray_namespace: str = "datapilot",
        ray_task_cpus: float = 1.0,
    ) -> None:
        self.settings = settings or KnowledgeSettings()
        self.home = Path(home).expanduser()
        self._ray: RayIngestion | None = None
        if ray:
            if embedder is not None:
                raise ConfigError(
                    "ingestion on Ray builds the embedder from settings.embedder in each Ray worker: "
                    "pass no embedder instance with ray=True (the same configuration then embeds queries here)"
                )
            self._ray = RayIngestion(self.settings.embedder, self.home, ray_address, ray_namespace, ray_task_cpus)
        self._embedder = embedder
        self._own_embedder = embedder is None
        self.ingestion = "ray" if self._ray is not None else "local"  # where documents are parsed and embedded
        self._index = index
        self._rerank_client = rerank_client
        self._local_client = local_client
        self._store: KnowledgeStore | None = None
        self._spaces: dict[str, _SpaceIndex] = {}
        self._doc_meta: dict[str, dict[str, Any]] = {}
        self._live: dict[str, DocumentInfo] = {}
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._open_lock = asyncio.Lock()

    # lifecycle ------------------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.settings.embedder, EmbedderContext(self.home, self._local_client))
        return self._embedder

    @property
    def store(self) -> KnowledgeStore:
        if self._store is None:
            raise DataPilotError("the knowledge base is not open: use `async with KnowledgeBase(...)` or open()")
        return self._store

    async def __aenter__(self) -> KnowledgeBase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        async with self._open_lock:
            if self._store is not None:
                return
            path = self.settings.database(self.home)
            store = await asyncio.to_thread(KnowledgeStore, path)
            failed = await asyncio.to_thread(store.fail_unfinished)
            if failed:
                log.warning("%d document(s) were left half-ingested by a stopped process; marked failed", failed)
            if self._ray is not None:
                await asyncio.to_thread(self._ray.connect)
            if self._index is None:
                self._index = self._make_index()
            self._store = store
            for space in await asyncio.to_thread(store.spaces):
                await asyncio.to_thread(self._load_space, space.name)
            self._queue = asyncio.Queue()
            self._workers = [
                asyncio.create_task(self._work(), name=f"knowledge-ingest-{i}")
                for i in range(self.settings.ingest_workers)
            ]

    def _make_index(self) -> VectorIndex:
        if self.settings.vector == "milvus":
            uri = self.settings.milvus_uri or str(self.home / "knowledge" / "milvus.db")
            token = self.settings.milvus_token.get_secret_value() if self.settings.milvus_token else None
            return MilvusIndex(uri, token, prefix="dp_knowledge_")
        return FaissIndex(None)

    def _load_space(self, name: str) -> None:
        """Rebuild a space's in-memory indexes from its rows (in a worker thread)."""
        state = _SpaceIndex()
        ids: list[int] = []
        texts: list[str] = []
        vectors: list[np.ndarray] = []
        for chunk_id, doc_id, text, page, section, blob in self.store.space_rows(name):
            ids.append(chunk_id)
            texts.append(ChunkDraft(text, 0, 0, page, section).index_text())
            state.chunk_doc[chunk_id] = doc_id
            state.chunk_loc[chunk_id] = (page, section)
            if blob is not None:
                vectors.append(np.frombuffer(blob, dtype=np.float32))
        state.bm25.add(ids, texts)
        index, scope = self._vectors, _SCOPE + name
        if not index.restore(scope, _signature(ids)):
            index.drop(scope)
            if vectors and len(vectors) == len(ids):
                index.add(scope, np.asarray(ids, dtype=np.int64), np.stack(vectors))
        for doc in self.store.documents(name):
            self._doc_meta[doc.id] = {**doc.metadata, "source": doc.source, "kind": doc.kind}
        self._spaces[name] = state

    @property
    def _vectors(self) -> VectorIndex:
        if self._index is None:
            raise DataPilotError("the knowledge base is not open")
        return self._index

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers = []
        if self._store is not None:
            if self._index is not None:
                self._index.close({})
            self._store.close()
            self._store = None
        if self._own_embedder and self._embedder is not None:
            close = getattr(self._embedder, "aclose", None)
            if close is not None:
                await close()
            self._embedder = None

    # spaces ---------------------------------------------------------------------------------------------

    async def create_space(
        self, name: str, description: str = "", chunking: ChunkingConfig | None = None, *, exist_ok: bool = False
    ) -> SpaceInfo:
        if not _SPACE_NAME.match(name):
            raise InvalidRequestError(
                f"invalid space name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                param="name",
            )
        config = check_chunking(chunking or self.settings.chunking)
        if exist_ok and name in self._spaces:
            return await self.space(name)
        info = await asyncio.to_thread(self.store.create_space, name, description, config.model_dump())
        self._spaces[name] = _SpaceIndex()
        return info

    async def spaces(self) -> list[SpaceInfo]:
        return await asyncio.to_thread(self.store.spaces)

    async def space(self, name: str) -> SpaceInfo:
        return await asyncio.to_thread(self.store.space, name)

    def _state(self, name: str) -> _SpaceIndex:
        # Another tenant's space: the 404 of a missing one; outside the key's scopes: 403.
        self.store.require_space(name)
        state = self._spaces.get(name)
        if state is None:
            raise SpaceNotFoundError(f"knowledge space {name!r} does not exist")
        return state

    async def delete_space(self, name: str) -> None:
        state = self._state(name)
        async with state.lock:
            for doc_id in set(state.chunk_doc.values()):
                self._doc_meta.pop(doc_id, None)
            await asyncio.to_thread(self.store.delete_space, name)
            await asyncio.to_thread(self._vectors.drop, _SCOPE + name)
            self._spaces.pop(name, None)
        for doc in [d for d in self._live.values() if d.space == name]:
            self._live.pop(doc.id, None)
        self._notify()

    # documents ------------------------------------------------------------------------------------------

    async def _chunking_for(self, space: str, override: ChunkingConfig | None) -> ChunkingConfig:
        if override is not None:
            return check_chunking(override)
        info = await self.space(space)
        return ChunkingConfig.model_validate(info.chunking)

    async def add_bytes(
        self,
        space: str,
        name: str,
        data: bytes,
        *,
        metadata: dict[str, Any] | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> DocumentInfo:
        """Queue ``data`` (the content of the file ``name``) for ingestion; answers its status at once."""
        self._state(space)
        kind = kind_of(name)
        check_size(name, len(data), self.settings.max_file_bytes)
        config = await self._chunking_for(space, chunking)
        return await self._submit(space, name, kind, len(data), _hash(data, config), config, metadata, data=data)

    async def add_text(
        self, space: str, name: str, text: str, *, metadata: dict[str, Any] | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> DocumentInfo:  # fmt: skip
        """Queue plain text (markdown when ``name`` ends in .md) as a document called ``name``."""
        if not Path(name).suffix:
            name += ".txt"
        return await self.add_bytes(space, name, text.encode(), metadata=metadata, chunking=chunking)

    async def add_file(
        self, space: str, path: Path | str, *, source: str | None = None, metadata: dict[str, Any] | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> DocumentInfo:  # fmt: skip
        """Queue one file; ``source`` (default: the path) names the document within the space."""
        self._state(space)
        path = Path(path)
        kind = kind_of(path.name)
        config = await self._chunking_for(space, chunking)

        def read() -> tuple[int, str]:
            size = path.stat().st_size
            check_size(str(path), size, self.settings.max_file_bytes)
            return size, _hash(path.read_bytes(), config)

        try:
            size, digest = await asyncio.to_thread(read)
        except FileNotFoundError:
            raise InvalidRequestError(f"{path}: no such file") from None
        return await self._submit(space, source or str(path), kind, size, digest, config, metadata, path=path)

    async def add_path(
        self, space: str, path: Path | str, *, metadata: dict[str, Any] | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> AddResult:  # fmt: skip
        """Queue a file, or every readable file under a folder (recursively). In a folder, a file of an
        unknown type or over the size limit is skipped with the reason; the rest go on."""
        path = await asyncio.to_thread(Path(path).expanduser)
        if await asyncio.to_thread(path.is_file):
            return AddResult([await self.add_file(space, path, metadata=metadata, chunking=chunking)])
        if not await asyncio.to_thread(path.is_dir):
            raise InvalidRequestError(f"{path}: no such file or folder")
        files, skipped_paths = await asyncio.to_thread(discover, path)
        result = AddResult([], [(str(p.relative_to(path)), why) for p, why in skipped_paths])
        for file in files:
            rel = str(file.relative_to(path))
            try:
                doc = await self.add_file(space, file, source=rel, metadata=metadata, chunking=chunking)
            except (DataPilotError, OSError) as exc:
                result.skipped.append((rel, getattr(exc, "message", None) or str(exc)))
                continue
            result.documents.append(doc)
        return result

    async def _submit(
        self,
        space: str,
        source: str,
        kind: str,
        size: int,
        digest: str,
        config: ChunkingConfig,
        metadata: dict[str, Any] | None,
        *,
        path: Path | None = None,
        data: bytes | None = None,
    ) -> DocumentInfo:
        meta = dict(metadata or {})
        existing = await asyncio.to_thread(self.store.find_document, space, source)
        if existing is not None and existing.content_hash == digest:
            live = self._live.get(existing.id)
            if live is not None:  # the same content is being ingested now
                return dataclasses.replace(live)
            if existing.status == IngestStatus.DONE and existing.metadata == meta:
                return dataclasses.replace(existing, unchanged=True)
        if existing is not None:
            await asyncio.to_thread(self.store.requeue, existing.id, kind, size, digest, meta)
            doc = await asyncio.to_thread(self.store.document, space, existing.id)
            doc.chunks_done = 0
        else:
            doc = await asyncio.to_thread(self.store.new_document, space, source, kind, size, digest, meta)
        self._doc_meta.setdefault(doc.id, {**meta, "source": source, "kind": kind})
        self._live[doc.id] = doc
        self._require_queue().put_nowait(_Job(doc.id, space, source, config, digest, path, data))
        self._notify()
        return dataclasses.replace(doc)

    def _require_queue(self) -> asyncio.Queue[_Job]:
        if self._queue is None:
            raise DataPilotError("the knowledge base is not open")
        return self._queue

    async def document(self, space: str, doc_id: str) -> DocumentInfo:
        live = self._live.get(doc_id)
        if live is not None and live.space == space:
            return dataclasses.replace(live)
        return await asyncio.to_thread(self.store.document, space, doc_id)

    async def documents(self, space: str) -> list[DocumentInfo]:
        self._state(space)
        docs = await asyncio.to_thread(self.store.documents, space)
        return [dataclasses.replace(self._live[d.id]) if d.id in self._live else d for d in docs]

    async def chunks(self, space: str, doc_id: str, offset: int = 0, limit: int = 100) -> list[ChunkInfo]:
        return await asyncio.to_thread(self.store.chunks, space, doc_id, offset, limit)

    async def delete_document(self, space: str, doc_id: str) -> int:
        """Remove a document from the store, the keyword index and the vector index; answers chunks removed."""
        state = self._state(space)
        async with state.lock:
            ids = await asyncio.to_thread(self.store.delete_document, space, doc_id)
            await asyncio.to_thread(self._unindex, space, state, ids)
        self._live.pop(doc_id, None)
        self._doc_meta.pop(doc_id, None)
        self._notify()
        return len(ids)

    def _unindex(self, space: str, state: _SpaceIndex, ids: list[int]) -> None:
        if not ids:
            return
        state.bm25.remove(ids)
        self._vectors.delete(_SCOPE + space, ids)
        for i in ids:
            state.chunk_doc.pop(i, None)
            state.chunk_loc.pop(i, None)

    async def wait(
        self,
        space: str,
        doc_ids: Iterable[str],
        on_progress: ProgressCallback | None = None,
        timeout_s: float | None = None,
    ) -> list[DocumentInfo]:
        """Wait until every listed document is done or failed, calling ``on_progress`` as they move."""
        ids = list(doc_ids)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            event = self._changed
            docs: list[DocumentInfo] = []
            for doc_id in ids:
                try:
                    docs.append(await self.document(space, doc_id))
                except DocumentNotFoundError:
                    continue
            if on_progress is not None:
                on_progress(docs)
            if all(d.status.finished for d in docs):
                return docs
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"ingestion did not finish within {timeout_s}s")
            try:
                await asyncio.wait_for(event.wait(), timeout=min(left or 0.5, 0.5))
            except TimeoutError:
                pass

    async def add(
        self, space: str, path: Path | str, *, on_progress: ProgressCallback | None = None,
        metadata: dict[str, Any] | None = None, chunking: ChunkingConfig | None = None,
    ) -> AddResult:  # fmt: skip
        """``add_path`` and wait for the result."""
        result = await self.add_path(space, path, metadata=metadata, chunking=chunking)
        docs = await self.wait(space, [d.id for d in result.documents], on_progress)
        unchanged = {d.id for d in result.documents if d.unchanged}
        result.documents = [dataclasses.replace(d, unchanged=d.id in unchanged) for d in docs]
        return result

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # ingestion ------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._require_queue()
        while True:
            job = await queue.get()
            try:
                await self._ingest(job)
            except asyncio.CancelledError:
                raise
            except DocumentNotFoundError:
                log.info("document %s was deleted during ingestion", job.doc_id)
            except Exception as exc:
                reason = exc.message if isinstance(exc, DataPilotError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, DataPilotError):
                    log.exception("ingesting %s failed", job.source)
                await self._set(job, IngestStatus.FAILED, reason)
            finally:
                self._live.pop(job.doc_id, None)
                self._notify()
                queue.task_done()

    async def _set(self, job: _Job, status: IngestStatus, error: str | None = None) -> None:
        live = self._live.get(job.doc_id)
        if live is not None:
            live.status, live.error, live.updated = status, error, time.time()
        await asyncio.to_thread(self.store.set_status, job.doc_id, status, error)
        self._notify()

    async def _ingest(self, job: _Job) -> None:
        live = self._live.get(job.doc_id)
        if live is None or job.space not in self._spaces:
            return  # deleted while queued
        await self._set(job, IngestStatus.PARSING)

        def read() -> bytes:
            return job.data if job.data is not None else job.path.read_bytes() if job.path else b""

        def parse() -> list[ChunkDraft]:
            doc = load_bytes(job.source, read(), self.settings.max_file_bytes)
            return chunk_document(doc, job.chunking)

        if self._ray is None:
            drafts = await asyncio.to_thread(parse)
            embedder = self.embedder
        else:  # the file is read here, so the Ray node that parses it needs no copy of it
            data = await asyncio.to_thread(read)
            drafts = await self._ray.parse(job.source, data, self.settings.max_file_bytes, job.chunking)
            embedder = self._ray.embedder(job.source)
        live.chunks, live.chunks_done = len(drafts), 0
        await self._set(job, IngestStatus.EMBEDDING)
        vectors = await self._embed_all(job, live, [d.index_text() for d in drafts], embedder)
        state = self._state(job.space)
        async with state.lock:
            old, new = await asyncio.to_thread(
                self.store.replace_chunks, job.space, job.doc_id, drafts, vectors, job.content_hash
            )

            def reindex() -> None:
                self._unindex(job.space, state, old)
                state.bm25.add(new, [d.index_text() for d in drafts])
                self._vectors.add(_SCOPE + job.space, np.asarray(new, dtype=np.int64), vectors)
                for chunk_id, draft in zip(new, drafts, strict=True):
                    state.chunk_doc[chunk_id] = job.doc_id
                    state.chunk_loc[chunk_id] = (draft.page, draft.section)

            await asyncio.to_thread(reindex)
        live.status, live.chunks_done = IngestStatus.DONE, len(drafts)

    async def _embed_all(self, job: _Job, live: DocumentInfo, texts: list[str], embedder: Embedder) -> np.ndarray:
        """Embed in batches, two in flight: the embedder never idles between batches, and a query
        waits behind at most two batches of this document."""
        size = self.settings.embed_batch
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        out: list[np.ndarray] = []
        pending: list[asyncio.Task[np.ndarray]] = []
        try:
            for i in range(len(batches)):
                while len(pending) < 2 and i + len(pending) < len(batches):
                    pending.append(asyncio.ensure_future(embedder.embed(batches[i + len(pending)])))
                vectors = await pending.pop(0)
                out.append(np.asarray(vectors, dtype=np.float32))
                live.chunks_done += len(vectors)
                if job.doc_id not in self._live:
                    raise DocumentNotFoundError(f"document {job.doc_id} was deleted during ingestion")
                self._notify()
        finally:
            for task in pending:
                task.cancel()
        dim = out[0].shape[1] if out else 0
        return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)

    # retrieval ------------------------------------------------------------------------------------------

    def _filter(
        self, state: _SpaceIndex, documents: list[str] | None, metadata: dict[str, Any] | None
    ) -> Callable[[int], bool] | None:
        if not documents and not metadata:
            return None
        allowed_docs = set(documents) if documents else None
        chunk_keys = {"page", "section"}
        doc_wanted = {k: v for k, v in (metadata or {}).items() if k not in chunk_keys}
        chunk_wanted = {k: v for k, v in (metadata or {}).items() if k in chunk_keys}
        doc_ok: dict[str, bool] = {}

        def allow(chunk_id: int) -> bool:
            doc_id = state.chunk_doc.get(chunk_id)
            if doc_id is None or (allowed_docs is not None and doc_id not in allowed_docs):
                return False
            ok = doc_ok.get(doc_id)
            if ok is None:
                ok = doc_ok[doc_id] = _matches(self._doc_meta.get(doc_id, {}), doc_wanted)
            if ok and chunk_wanted:
                page, section = state.chunk_loc.get(chunk_id, (None, None))
                ok = _matches({"page": page, "section": section}, chunk_wanted)
            return ok

        return allow

    def _dense(self, space: str, vector: np.ndarray, n: int, allow: Callable[[int], bool] | None) -> list[int]:
        scope = _SCOPE + space
        if allow is None:
            return self._vectors.search(scope, vector, n)[0]
        total = self._vectors.count(scope)
        fetch = min(total, n * 8)
        while True:
            ids = [i for i in self._vectors.search(scope, vector, fetch)[0] if allow(i)]
            if len(ids) >= n or fetch >= total:
                return ids[:n]
            fetch = min(total, fetch * 4)  # a narrow filter: widen until enough pass, at worst everything

    async def retrieve(
        self,
        space: str,
        query: str,
        *,
        k: int | None = None,
        mode: str = "hybrid",
        documents: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        rerank: str | bool | None = None,
    ) -> list[Passage]:
        """The ``k`` passages of ``space`` that best answer ``query``.

        ``mode``: ``hybrid`` (dense and BM25 fused by reciprocal rank), ``dense`` or ``keyword``.
        ``documents``/``metadata`` filter (metadata keys match document metadata, ``source``, ``kind``,
        or a chunk's ``page``/``section``; a list value matches any of its items). ``rerank``: a rerank
        model name, True for the configured one, False for none; default: the configured one, if any.
        """
        if mode not in MODES:
            raise InvalidRequestError(f"unknown retrieval mode {mode!r}; one of {', '.join(MODES)}", param="mode")
        audit_note(knowledge_space=space)
        if not query.strip():
            raise InvalidRequestError("the query is empty", param="query")
        state = self._state(space)
        k = k or self.settings.top_k
        n = max(self.settings.candidates, k)
        allow = self._filter(state, documents, metadata)
        dense: list[int] = []
        keyword: list[int] = []
        if mode in ("dense", "hybrid") and self._vectors.count(_SCOPE + space):
            if mode == "hybrid":
                vectors, hits = await asyncio.gather(
                    self.embedder.embed([query]), asyncio.to_thread(state.bm25.search, query, n, allow)
                )
                keyword = [i for i, _ in hits]
            else:
                vectors = await self.embedder.embed([query])
            dense = self._dense(space, np.asarray(vectors[0], dtype=np.float32), n, allow)
        if mode == "keyword" or (mode == "hybrid" and not dense and not keyword):
            keyword = [i for i, _ in state.bm25.search(query, n, allow)]
        fused = self._fuse(dense, keyword)
        model = self._rerank_model(rerank)
        candidates = fused[: n if model else k]
        rows = await asyncio.to_thread(self.store.chunks_by_id, [i for i, _ in candidates])
        dense_rank = {c: r for r, c in enumerate(dense, 1)}
        keyword_rank = {c: r for r, c in enumerate(keyword, 1)}
        passages = [
            Passage(rows[i], self._doc_meta.get(rows[i].document_id, {}).get("source", ""), score,
                    dense_rank.get(i), keyword_rank.get(i))
            for i, score in candidates if i in rows
        ]  # fmt: skip
        if model and passages:
            passages = await self._rerank(model, query, passages)
        return passages[:k]

    def _fuse(self, dense: list[int], keyword: list[int]) -> list[tuple[int, float]]:
        if not keyword:
            return [(c, 1.0 / (self.settings.rrf_k + r)) for r, c in enumerate(dense, 1)]
        if not dense:
            return [(c, 1.0 / (self.settings.rrf_k + r)) for r, c in enumerate(keyword, 1)]
        scores: dict[int, float] = {}
        for ranking in (dense, keyword):
            for rank, chunk_id in enumerate(ranking, 1):
                scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (self.settings.rrf_k + rank)
        return sorted(scores.items(), key=lambda p: -p[1])

    def _rerank_model(self, rerank: str | bool | None) -> str | None:
        if rerank is False:
            return None
        if isinstance(rerank, str) and rerank:
            model: str | None = rerank
        else:
            model = self.settings.rerank_model
            if rerank is True and model is None:
                raise InvalidRequestError("rerank asked for, but no rerank model is configured", param="rerank")
        if model is not None and self._rerank_client is None:
            raise InvalidRequestError("reranking needs a model client; none was given to the knowledge base")
        return model

    async def _rerank(self, model: str, query: str, passages: list[Passage]) -> list[Passage]:
        assert self._rerank_client is not None
        out = await self._rerank_client.rerank(model, query, [p.chunk.text for p in passages])
        for passage, score in zip(passages, out.scores, strict=True):
            passage.rerank_score = float(score)
        return sorted(passages, key=lambda p: -(p.rerank_score or 0.0))
