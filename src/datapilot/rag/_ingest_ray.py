"""Knowledge ingestion on Ray: a document's parsing and chunking, and its embedding batches, as Ray tasks.

The driver (``KnowledgeBase``) keeps everything else: it reads the file, moves the document through its
states (parsing, embedding with ``chunks_done`` per batch, done or failed), and writes the chunks and
vectors to its stores (SQLite, faiss or Milvus). Only plain values travel: the file's bytes and name,
the chunking, the embedder's configuration and home, and the texts of one batch; back come the chunk
drafts and the vectors. So a document's file need not exist on the node that parses it.

A Ray worker process builds each embedder once (``_embedder``: cached at module level by configuration
and home) and runs it on an event loop of its own, in a thread that lives as long as the process: the
next task on that worker finds the model loaded. A document that fails to parse raises its own error
(``DocumentParseError``...) through ``run_task``, so it fails alone, as in-process.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.core.config import CacheEmbedderConfig
from datapilot.core.errors import ConfigError
from datapilot.rag._chunking import chunk_document
from datapilot.rag._config import ChunkingConfig
from datapilot.rag._loaders import load_bytes
from datapilot.rag._types import ChunkDraft
from datapilot.retrieval import Embedder, EmbedderContext, make_embedder
from datapilot.runtime import connect, run_task

# A document's parse or an embedding batch holds one CPU while it runs, unless configured otherwise
# (``[ray] task_num_cpus``: on a cluster whose nodes' CPUs are mostly held by model actors, a task
# asking for a whole CPU that no node has free would wait for ever).
DEFAULT_TASK_CPUS = 1.0


def shippable(config: CacheEmbedderConfig) -> bool:
    """Whether a Ray worker can build the embedder ``config`` describes (``check_shippable`` says why not)."""
    return not (config.kind == "datapilot" and not config.base_url)


def check_shippable(config: CacheEmbedderConfig) -> None:
    """Refuse an embedder a Ray worker cannot build: the ``datapilot`` kind without ``base_url`` embeds
    with the serving process's own models, which a worker does not have."""
    if not shippable(config):
        raise ConfigError(
            "ingestion on Ray builds the embedder in each Ray worker: embedder kind 'datapilot' needs "
            "base_url there (a DataPilot server's /v1), or ingest without Ray"
        )


class RayIngestion:
    """What ``KnowledgeBase`` calls instead of its threads when ingestion runs on Ray."""

    def __init__(
        self,
        embedder: CacheEmbedderConfig,
        home: Path,
        address: str | None,
        namespace: str,
        num_cpus: float = DEFAULT_TASK_CPUS,
    ) -> None:
        check_shippable(embedder)
        self.config, self.home = embedder, home
        self.address, self.namespace = address, namespace
        self.options: dict[str, Any] = {"num_cpus": num_cpus}

    def connect(self) -> dict[str, Any]:
        """Join (or start) the Ray cluster; idempotent within a process."""
        return connect(self.address, self.namespace)

    async def parse(self, source: str, data: bytes, max_bytes: int, chunking: ChunkingConfig) -> list[ChunkDraft]:
        drafts: list[ChunkDraft] = await run_task(
            parse_document, (source, data, max_bytes, chunking), options=self.options, what=f"parsing {source}"
        )
        return drafts

    def embedder(self, source: str) -> RayEmbedder:
        return RayEmbedder(self.config, self.home, source, self.options)


class RayEmbedder:
    """An ``Embedder`` whose every call is a Ray task, for one document's batches."""

    def __init__(self, config: CacheEmbedderConfig, home: Path, source: str, options: dict[str, Any]) -> None:
        self.config, self.home, self.source, self.options = config, home, source, options
        self.name = f"ray:{config.kind}"

    async def embed(self, texts: list[str]) -> np.ndarray:
        vectors: np.ndarray = await run_task(
            embed_texts, (self.config, str(self.home), texts), options=self.options, what=f"embedding {self.source}"
        )
        return vectors


# --- what runs in the Ray workers ------------------------------------------------------------------------


def parse_document(source: str, data: bytes, max_bytes: int, chunking: ChunkingConfig) -> list[ChunkDraft]:
    """The document ``source`` (its bytes) parsed and cut into chunks, as ``KnowledgeBase`` does in a thread."""
    return chunk_document(load_bytes(source, data, max_bytes), chunking)


_lock = threading.Lock()
_embedders: dict[tuple[str, str], Embedder] = {}
_loads: Counter[str] = Counter()  # embedders built in this process, by kind: once each per configuration
_loop: asyncio.AbstractEventLoop | None = None


def _worker_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for embedders, running in a daemon thread (an embedder's locks and
    batcher stay on one loop across tasks)."""
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="datapilot-ingest-embed", daemon=True).start()
            _loop = loop
        return _loop


def _embedder(config: CacheEmbedderConfig, home: str) -> Embedder:
    secret = config.api_key.get_secret_value() if config.api_key else ""
    key = (config.model_dump_json() + secret, home)
    with _lock:
        embedder = _embedders.get(key)
        if embedder is None:
            embedder = _embedders[key] = make_embedder(config, EmbedderContext(Path(home)))
            _loads[config.kind] += 1
        return embedder


def embed_texts(config: CacheEmbedderConfig, home: str, texts: list[str]) -> np.ndarray:
    """The texts' vectors by the embedder ``config`` describes, built once per worker process."""
    embedder = _embedder(config, home)
    vectors = asyncio.run_coroutine_threadsafe(embedder.embed(texts), _worker_loop()).result()
    return np.asarray(vectors, dtype=np.float32)


def worker_embedders() -> dict[str, Any]:
    """This process's id and the embedders it has built, by kind (a check that they are built once)."""
    with _lock:
        return {"pid": os.getpid(), "loads": dict(_loads)}
