"""``SemanticCache``: the async core (query, insert, remove, truncate, stats) over a scalar store, a
vector index and embedders; ``SyncSemanticCache`` is the thin blocking wrapper.

A lookup: embed the question (and the context, unless its embedding is cached) → search the scope's
index for the top-k → fetch the live rows → keep the first candidate that clears, in order, the cosine
threshold (short or long), the parameters, the context (see ``_key``), the lexical guards, the
ambiguity margin and, when configured, the reranker. Logging and hit counting go through a background
writer, off the request path. Feedback on hits (``feedback``; see ``_feedback``) keeps an entry from
answering probes like one marked wrong for it and gives it its own threshold, both held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from datapilot.cache import _lexical as lexical
from datapilot.cache._embed import Embedder, EmbedderContext, make_embedder
from datapilot.cache._feedback import ScopeFeedback
from datapilot.cache._guards import guard
from datapilot.cache._index import FaissIndex, MilvusIndex, VectorIndex
from datapilot.cache._key import CacheKey, embedding_text, key_for_messages, key_for_prompt, normalise
from datapilot.cache._rerank import Reranker, RerankerContext, make_reranker
from datapilot.cache._sql import SQLStore, default_sqlite_url
from datapilot.cache._types import CacheResult, Entry, FeedbackRecord, LogRecord, NewEntry, Scope, Stats
from datapilot.core.client import EmbeddingClient
from datapilot.core.config import CachePolicy, CacheSettings
from datapilot.core.errors import ConfigError, InvalidRequestError, NotFoundError

T = TypeVar("T")
ScopeLike = Scope | str | dict[str, Any]
_CONTEXT_CACHE = 4096
_ROW_CACHE = 50_000
_LOG_BATCH_S = 0.05  # the query log and hit counts are written at most this often
MAX_ANSWER_CHARS = 1_000_000
MAX_QUESTION_CHARS = 200_000


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)), 3)


class _Writer:
    """Writes the query log and hit counters in batches from a background thread."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store
        self._queue: queue.Queue[LogRecord | tuple[int, float] | threading.Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cache-log-writer", daemon=True)
        self._thread.start()

    def log(self, record: LogRecord) -> None:
        self._queue.put(record)

    def hit(self, entry_id: int, at: float) -> None:
        self._queue.put((entry_id, at))

    def flush(self, timeout: float = 10.0) -> None:
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            if isinstance(items[0], LogRecord | tuple):
                # Gather a batch: one write per query would hold the GIL (SQLAlchemy is Python) and make
                # every lookup wait for it when it comes back from faiss or SQLite.
                time.sleep(_LOG_BATCH_S)
            with contextlib.suppress(queue.Empty):
                while len(items) < 1000:
                    items.append(self._queue.get_nowait())
            logs = [i for i in items if isinstance(i, LogRecord)]
            hits = [i for i in items if isinstance(i, tuple)]
            try:
                self._store.write_log(logs)
                self._store.record_hits(hits)
            except Exception:  # the log must never take the cache down
                import logging

                logging.getLogger("datapilot.cache").exception("could not write the cache query log")
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                elif item is None:
                    stop = True


@dataclass(slots=True)
class _Candidate:
    entry: Entry
    similarity: float


class SemanticCache:
    """The semantic cache. Build with ``SemanticCache.from_settings`` or pass parts explicitly (tests)."""

    def __init__(
        self,
        settings: CacheSettings | None = None,
        home: Path | None = None,
        *,
        store: SQLStore | None = None,
        index: VectorIndex | None = None,
        embedders: dict[str, Embedder] | None = None,
        rerankers: dict[str, Reranker] | None = None,
        local_client: EmbeddingClient | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        self.home = Path(home) if home is not None else Path("~/.datapilot").expanduser()
        self._store = store
        self._index = index
        self._embedders: dict[str, Embedder] = dict(embedders or {})
        self._rerankers: dict[str, Reranker] = dict(rerankers or {})
        self._built_rerankers: dict[str, Reranker] = {}  # from settings: ours to close
        self._local_client = local_client
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cache-store")
        self._policies: dict[str, CachePolicy] = {}
        self._counts: dict[str, int] = {}
        self._inserts_since_purge: dict[str, int] = {}
        self._context_vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._writer: _Writer | None = None
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._scope_locks: dict[str, threading.Lock] = {}
        # Rows of the embedded store kept in memory, so a lookup needs no SQL round trip. Only where this
        # process is the store's one writer (SQLite): with a shared server another process may delete rows.
        self._rows: dict[str, OrderedDict[int, Entry]] = {}
        self._rows_lock = threading.Lock()
        self._row_cache = False
        # Embedded stores (faiss in memory, SQLite on local disk) answer a lookup in well under a
        # millisecond, less than a hop to a worker thread and back costs: they run on the event loop.
        self._inline_lookup = False
        # Each scope's feedback, loaded on its first lookup or mark (see ``_feedback``).
        self._feedback: dict[str, ScopeFeedback] = {}
        self._lexical = lexical.LexicalIndex()

    # lifecycle ---------------------------------------------------------------------------------------

    @property
    def store(self) -> SQLStore:
        if self._store is None:
            raise RuntimeError("the cache is not open: call `await cache.open()` first")
        return self._store

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            raise RuntimeError("the cache is not open: call `await cache.open()` first")
        return self._index

    async def open(self) -> SemanticCache:
        async with self._open_lock:
            if not self._opened:
                await self._run(self._open_sync)
                self._opened = True
        return self

    def _open_sync(self) -> None:
        cfg = self.settings.store
        if self._store is None:
            self._store = SQLStore(cfg.sql_url or default_sqlite_url(self.home))
        if self._index is None:
            if cfg.vector == "milvus":
                if not cfg.milvus_uri:
                    raise ConfigError("cache.store.vector = 'milvus' needs cache.store.milvus_uri")
                token = cfg.milvus_token.get_secret_value() if cfg.milvus_token else None
                self._index = MilvusIndex(cfg.milvus_uri, token)
            else:
                self._index = FaissIndex(self.home / "cache" / "faiss" if cfg.sql_url is None else None)
        self._row_cache = self.store.is_sqlite
        self._inline_lookup = self.store.is_sqlite and isinstance(self._index, FaissIndex)
        for scope in self.store.scope_keys():
            self._sync_index(scope)
        self._writer = _Writer(self.store)

    def _sync_index(self, scope: str) -> None:
        """Make the scope's vectors agree with its rows: reuse a matching snapshot, else rebuild from SQL."""
        signature = self.store.signature(scope)
        self._counts[scope] = signature[0]
        if self.index.restore(scope, signature):
            return
        self.index.drop(scope)
        for ids, vectors in self.store.iter_vectors(scope):
            self.index.add(scope, ids, vectors)

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        await self._run(self._close_sync)
        for closable in [*self._embedders.values(), *self._built_rerankers.values()]:
            close = getattr(closable, "aclose", None)
            if close is not None:
                await close()
        self._built_rerankers.clear()  # closed clients: a reopened cache builds them again
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._writer is not None:
            self._writer.close()
        signatures = {scope: self.store.signature(scope) for scope in self.store.scope_keys()}
        self.index.close(signatures)
        self.store.close()

    async def __aenter__(self) -> SemanticCache:
        return await self.open()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # policy and embedders ----------------------------------------------------------------------------

    def policy(self, scope: ScopeLike) -> CachePolicy:
        s = Scope.parse(scope)
        policy = self._policies.get(s.key)
        if policy is None:
            stored = self.store.scope_settings(s.key) if self._store is not None else None
            merged = {
                **self.settings.defaults.model_dump(),
                **self.settings.scopes.get(s.model, {}),
                **(self.settings.scopes.get(f"{s.model}/{s.tenant}", {}) if s.tenant else {}),
                **(stored or {}),
            }
            policy = CachePolicy.model_validate(merged)
            self._policies[s.key] = policy
        return policy

    async def set_policy(self, scope: ScopeLike, overrides: dict[str, Any]) -> CachePolicy:
        """Store per-scope overrides (validated first: bad ones change nothing)."""
        s = Scope.parse(scope)
        current = self.store.scope_settings(s.key) or {}
        merged = {**current, **overrides}
        try:
            CachePolicy.model_validate({**self.settings.defaults.model_dump(), **merged})
        except ValueError as exc:
            raise InvalidRequestError(f"invalid cache settings: {exc}", param="settings") from None
        if merged.get("embedder", "default") not in self.settings.embedders and merged.get("embedder") not in (
            self._embedders
        ):
            raise InvalidRequestError(f"unknown embedder {merged.get('embedder')!r}", param="settings.embedder")
        if self._counts.get(s.key) and merged.get("embedder") != current.get("embedder", merged.get("embedder")):
            raise InvalidRequestError(
                "changing the embedder of a scope with entries would mix vector spaces; truncate it first",
                param="settings.embedder",
            )
        await self._run(self.store.register, s.key, merged)
        self._policies.pop(s.key, None)
        return self.policy(s)

    def embedder(self, name: str) -> Embedder:
        embedder = self._embedders.get(name)
        if embedder is None:
            config = self.settings.embedders.get(name)
            if config is None:
                raise ConfigError(f"cache embedder {name!r} is not configured (cache.embedders)")
            embedder = make_embedder(config, EmbedderContext(self.home, self._local_client))
            self._embedders[name] = embedder
        return embedder

    def _reranker(self, name: str) -> Reranker:
        reranker = self._rerankers.get(name) or self._built_rerankers.get(name)
        if reranker is None:
            config = self.settings.rerankers.get(name)
            if config is None:
                raise ConfigError(f"cache reranker {name!r} is not configured (cache.rerankers)")
            reranker = make_reranker(config, RerankerContext(self._local_client))
            self._built_rerankers[name] = reranker
        return reranker

    async def _embed_key(self, policy: CachePolicy, key: CacheKey) -> tuple[np.ndarray, np.ndarray | None]:
        embedder = self.embedder(policy.embedder)
        cache_key = (policy.embedder, key.context_hash)
        cached = self._context_vectors.get(cache_key) if key.context else None
        question = embedding_text(key.question)
        texts = [question] if not key.context or cached is not None else [question, embedding_text(key.context)]
        vectors = await embedder.embed(texts)
        if not key.context:
            return vectors[0], None
        if cached is None:
            cached = vectors[1]
            self._context_vectors[cache_key] = cached
            if len(self._context_vectors) > _CONTEXT_CACHE:
                self._context_vectors.popitem(last=False)
        else:
            self._context_vectors.move_to_end(cache_key)
        return vectors[0], cached

    # lookup ------------------------------------------------------------------------------------------

    @staticmethod
    def _key(messages: Any, prompt: str | None, params_key: str) -> CacheKey:
        if prompt is not None:
            key = key_for_prompt(prompt, params_key)
        else:
            key = key_for_messages(messages, params_key)
        if len(key.question) > MAX_QUESTION_CHARS:
            raise InvalidRequestError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        return key

    async def query(
        self,
        scope: ScopeLike,
        messages: Any = None,
        *,
        prompt: str | None = None,
        params_key: str = "",
        log: bool = True,
    ) -> CacheResult:
        """Look ``messages`` (or a completion ``prompt``) up in ``scope``."""
        started = time.perf_counter()
        s = Scope.parse(scope)
        key = self._key(messages, prompt, params_key)
        await self.open()
        policy = self.policy(s)
        qvec, cvec = await self._embed_key(policy, key)
        if s.key not in self._feedback:
            await self._run(self._feedback_sync, s.key)
        embedded = time.perf_counter()
        # Inline when it cannot block the loop: not while the index is being written, and not for a Chinese
        # question whose scope's lexical index is still to be built from the rows (seconds, at 100k).
        building = policy.lexical_weight > 0 and not self._lexical.built(s.key) and bool(lexical.features(key.question))
        if self._inline_lookup and not self._index_busy() and not building:
            result, needs_rerank = self._lookup_sync(s.key, key, qvec, cvec, policy)
        else:
            result, needs_rerank = await self._run(self._lookup_sync, s.key, key, qvec, cvec, policy)
        if needs_rerank is not None and policy.reranker:
            reranker = self._reranker(policy.reranker)
            score = (await reranker.score(key.question, [needs_rerank.entry.question]))[0]
            if score < reranker.threshold:
                result = CacheResult(False, similarity=needs_rerank.similarity, reason="reranker")
        done = time.perf_counter()
        result.embed_ms = (embedded - started) * 1000
        result.lookup_ms = (done - embedded) * 1000
        result.vectors = (qvec, cvec)
        if log and self._writer is not None:
            now = time.time()
            if result.hit and result.id is not None:
                self._writer.hit(result.id, now)
            if self.settings.log_queries:
                self._writer.log(
                    LogRecord(
                        s.key,
                        key.question,
                        result.hit,
                        result.hit_query,
                        result.similarity,
                        round((done - started) * 1000, 3),
                        now,
                        result.id,
                        round(result.lookup_ms, 3),
                    )
                )
        return result

    def _index_busy(self) -> bool:
        index = self._index
        return isinstance(index, FaissIndex) and index.busy()

    def _lookup_sync(
        self, scope: str, key: CacheKey, qvec: np.ndarray, cvec: np.ndarray | None, policy: CachePolicy
    ) -> tuple[CacheResult, _Candidate | None]:
        ids, scores = self.index.search(scope, qvec, policy.top_k)
        threshold = policy.threshold_long if len(key.question) > policy.long_text_chars else policy.threshold_short
        marks = self._feedback.get(scope)
        # Feedback may have lowered some entries' own thresholds: candidates down to the lowest are looked at.
        floor = marks.floor(threshold, policy.target_precision) if marks is not None else threshold
        terms = lexical.features(key.question) if policy.lexical_weight > 0 else frozenset()
        fetched: dict[int, Entry] | None = None  # the rows the lexical channel read already
        if terms and ids:
            ids, scores, fetched = self._with_lexical(scope, qvec, terms, ids, scores, policy, floor - policy.margin)
        if not ids:
            return CacheResult(False, reason="empty"), None
        best = scores[0]
        if best < floor:
            return CacheResult(False, similarity=min(best, 1.0), reason="below_threshold"), None
        # Rows within the margin of the threshold are fetched too: they are the runners-up that make a
        # candidate ambiguous.
        near = [(i, s) for i, s in zip(ids, scores, strict=True) if s >= floor - policy.margin]
        rows = fetched if fetched is not None else self._fetch(scope, [i for i, _ in near], time.time())
        live = [(rows[i], s) for i, s in near if i in rows]
        reason = "expired"
        asked = normalise(key.question)
        learned = marks.learned_rules(policy.target_precision) if marks is not None else frozenset()
        for entry, sim in live:
            if sim < floor:
                break
            why = (
                marks.verdict(entry.id, sim, threshold, policy.target_precision, asked, qvec)
                if marks is not None
                else None
            )
            why = why or self._reject(key, cvec, entry, sim, policy, learned)
            # The question asked again (case, spacing and end punctuation aside) is no near miss: neither
            # a close runner-up nor a reranker can make the stored answer to it the wrong one.
            mine = normalise(entry.question)
            repeat = mine == asked
            if why is None and policy.margin > 0 and not repeat:
                # Another stored question (not a copy of this one) almost as close: the probe is ambiguous
                # between two meanings, so answering with either is a coin toss.
                # Only runners-up the verifier would also serve count: one that differs from the probe in a
                # key term is no second meaning of it.
                others = (
                    s
                    for e, s in live
                    if e.id != entry.id
                    and normalise(e.question) != mine
                    and self._reject(key, cvec, e, s, policy, learned) is None
                )
                runner_up = max(others, default=-1.0)
                if sim - runner_up < policy.margin:
                    why = "ambiguous"
            if why is None:
                # A hybrid similarity (``_lexical``) can pass 1; it is reported as at most 1.
                hit = CacheResult(True, entry.answer, min(sim, 1.0), entry.question, entry.id, reason="hit")
                return hit, (_Candidate(entry, sim) if policy.reranker and not repeat else None)
            if reason == "expired":
                reason = why
        return CacheResult(False, similarity=min(best, 1.0), reason=reason), None

    def _with_lexical(
        self,
        scope: str,
        qvec: np.ndarray,
        terms: frozenset[str],
        ids: list[int],
        scores: list[float],
        policy: CachePolicy,
        lowest: float,
    ) -> tuple[list[int], list[float], dict[int, Entry]]:
        """The vector index's candidates and the lexical index's, scored by the hybrid similarity (see
        ``_lexical``), best first, with their live rows. A lexical candidate the vector index did not return
        has a cosine of at most the last one it did: when even that could not lift it to ``lowest``, its
        vector is not read."""
        if not self._lexical.built(scope):
            with self._scope_lock(scope):  # no insert slips between reading the rows and indexing them
                if not self._lexical.built(scope):
                    self._lexical.build(scope, (row for rows in self.store.iter_questions(scope) for row in rows))
        else:
            seen = self._lexical.due(scope)
            if seen is not None:  # rows other processes sharing the store added since
                for batch in self.store.iter_questions(scope, after=seen):
                    self._lexical.add(scope, batch, from_rows=True)
        cosine = dict(zip(ids, scores, strict=True))
        found = [i for i in self._lexical.search(scope, terms, policy.top_k) if i not in cosine]
        rows = self._fetch(scope, [*cosine, *found], time.time())
        lex = {i: lexical.overlap(terms, lexical.features(e.question)) for i, e in rows.items()}
        bound = scores[-1] if len(ids) >= policy.top_k else 1.0
        missing = [i for i in found if i in lex and lexical.hybrid(bound, lex[i], policy.lexical_weight) >= lowest]
        if missing:
            for i, vec in self.store.vectors(scope, missing).items():
                if len(vec) == len(qvec):
                    cosine[i] = float(np.dot(qvec, vec))
        scored = [(i, lexical.hybrid(c, lex[i], policy.lexical_weight)) for i, c in cosine.items() if i in lex]
        scored.sort(key=lambda x: -x[1])
        return [i for i, _ in scored], [s for _, s in scored], rows

    def _fetch(self, scope: str, ids: list[int], now: float) -> dict[int, Entry]:
        if not self._row_cache:
            return self.store.fetch(scope, ids, now)
        found: dict[int, Entry] = {}
        with self._rows_lock:
            rows = self._rows.setdefault(scope, OrderedDict())
            for i in ids:
                entry = rows.get(i)
                if entry is not None:
                    rows.move_to_end(i)
                    found[i] = entry
        missing = [i for i in ids if i not in found]
        if missing:
            fetched = self.store.fetch(scope, missing, now)
            found.update(fetched)
            self._remember(scope, list(fetched.values()))
        return {i: e for i, e in found.items() if e.expires_at is None or e.expires_at > now}

    def _remember(self, scope: str, entries: list[Entry]) -> None:
        if not self._row_cache:
            return
        with self._rows_lock:
            rows = self._rows.setdefault(scope, OrderedDict())
            for e in entries:
                rows[e.id] = e
            while len(rows) > _ROW_CACHE:
                rows.popitem(last=False)

    def _forget(self, scope: str, ids: list[int] | None) -> None:
        # The store deleted these entries' feedback with them (eviction, remove, truncate).
        if ids is None:
            self._lexical.drop(scope)
        else:
            self._lexical.remove(scope, ids)
        marks = self._feedback.get(scope)
        if marks is not None:
            if ids is None:
                self._feedback.pop(scope, None)
            else:
                marks.forget(ids)
        with self._rows_lock:
            if ids is None:
                self._rows.pop(scope, None)
                return
            rows = self._rows.get(scope)
            if rows is not None:
                for i in ids:
                    rows.pop(i, None)

    @staticmethod
    def _reject(
        key: CacheKey,
        cvec: np.ndarray | None,
        entry: Entry,
        sim: float,
        policy: CachePolicy,
        learned: frozenset[str] = frozenset(),
    ) -> str | None:
        if entry.params_key != key.params_key:
            return "params"
        if key.context or entry.context:
            if not key.context or not entry.context:
                return "context"
            if entry.context_hash != key.context_hash:
                if cvec is None or entry.context_vector is None or len(entry.context_vector) != len(cvec):
                    return "context"
                if float(np.dot(cvec, entry.context_vector)) < policy.context_threshold:
                    return "context"
                if policy.guards and guard(key.context, entry.context) is not None:
                    return "context"
        if policy.guards:
            why = guard(key.question, entry.question, substitutions=policy.substitutions)
            if why is not None:
                return f"guard:{why}"
            if not policy.substitutions and "term" in learned:
                why = guard(key.question, entry.question)
                return "feedback:term" if why == "term" else None
        elif learned:
            # The verifier is off, but the scope's marks taught it some of its rules (``_feedback``).
            why = guard(key.question, entry.question)
            if why in learned:
                return f"feedback:{why}"
        return None

    # writes ------------------------------------------------------------------------------------------

    async def insert(
        self,
        scope: ScopeLike,
        messages: Any = None,
        answer: str = "",
        *,
        prompt: str | None = None,
        params_key: str = "",
        vectors: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> int:
        """Store one answer; returns its id. ``vectors`` (from a query's result) skip re-embedding."""
        return (
            await self.insert_many(
                scope,
                [(messages if prompt is None else prompt, answer)],
                prompts=prompt is not None,
                params_key=params_key,
                vectors=[vectors] if vectors is not None else None,
            )
        )[0]

    async def insert_many(
        self,
        scope: ScopeLike,
        items: Iterable[tuple[Any, str]],
        *,
        prompts: bool = False,
        params_key: str = "",
        vectors: list[tuple[np.ndarray, np.ndarray | None] | None] | None = None,
    ) -> list[int]:
        """Store many (messages, answer) pairs in one transaction: all are validated first, and a bad
        one writes nothing."""
        s = Scope.parse(scope)
        items = list(items)
        if not items:
            return []
        keys: list[CacheKey] = []
        for i, (question, answer) in enumerate(items):
            try:
                keys.append(self._key(None if prompts else question, question if prompts else None, params_key))
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"entry {i}: {exc.message}", param=exc.param) from None
            if not isinstance(answer, str) or not answer:
                raise InvalidRequestError(f"entry {i}: answer must be a non-empty string", param="answer")
            if len(answer) > MAX_ANSWER_CHARS:
                raise InvalidRequestError(f"entry {i}: answer is longer than {MAX_ANSWER_CHARS} characters")
        await self.open()
        policy = self.policy(s)
        given = [v for v in vectors or [] if v is not None]
        embedded = given if len(given) == len(keys) else await self._embed_many(policy, keys)
        now = time.time()
        expires = now + policy.ttl_s if policy.ttl_s else None
        rows = [
            NewEntry(s.key, k.question, k.context, k.context_hash, k.params_key, answer, v[0], v[1], now, expires)
            for k, (_, answer), v in zip(keys, items, embedded, strict=True)
        ]
        return await self._run(self._insert_sync, s.key, rows, policy)

    async def _embed_many(
        self, policy: CachePolicy, keys: list[CacheKey]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        embedder = self.embedder(policy.embedder)
        questions = await embedder.embed([embedding_text(k.question) for k in keys])
        contexts = sorted({k.context for k in keys if k.context})
        by_context: dict[str, np.ndarray] = {}
        if contexts:
            vectors = await embedder.embed([embedding_text(c) for c in contexts])
            by_context = dict(zip(contexts, vectors, strict=True))
        return [(questions[i], by_context.get(k.context) if k.context else None) for i, k in enumerate(keys)]

    def _scope_lock(self, scope: str) -> threading.Lock:
        lock = self._scope_locks.get(scope)
        if lock is None:
            lock = self._scope_locks.setdefault(scope, threading.Lock())
        return lock

    def _insert_sync(self, scope: str, rows: list[NewEntry], policy: CachePolicy) -> list[int]:
        # One writer per scope at a time, so ids reach the index in commit order and eviction counts hold.
        with self._scope_lock(scope):
            ids = self.store.insert(rows)
            self.index.add(scope, np.asarray(ids, dtype=np.int64), np.stack([r.vector for r in rows]))
            self._lexical.add(scope, [(i, r.question) for i, r in zip(ids, rows, strict=True)])
            self._remember(
                scope,
                [
                    Entry(
                        i,
                        scope,
                        r.question,
                        r.context,
                        r.context_hash,
                        r.params_key,
                        r.answer,
                        r.created_at,
                        r.expires_at,
                        context_vector=r.context_vector,
                    )
                    for i, r in zip(ids, rows, strict=True)
                ],
            )
            self._counts[scope] = self._counts.get(scope, 0) + len(ids)
            since = self._inserts_since_purge.get(scope, 0) + len(ids)
            self._inserts_since_purge[scope] = since
            if self._counts[scope] > policy.max_entries or (policy.ttl_s and since >= 256):
                gone = self.store.evict(scope, policy.max_entries, policy.eviction, time.time())
                self.index.delete(scope, gone)
                self._forget(scope, gone)
                self._counts[scope] = self.store.count(scope)
                self._inserts_since_purge[scope] = 0
        return ids

    async def remove(self, scope: ScopeLike, ids: list[int]) -> int:
        s = Scope.parse(scope)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InvalidRequestError("id_list must be a list of integer ids", param="id_list")
        ids = [i for i in ids if -(2**63) <= i < 2**63]  # no row has an id beyond SQL's 64-bit integers
        await self.open()

        def run() -> int:
            with self._scope_lock(s.key):
                gone = self.store.delete(s.key, ids)
                self.index.delete(s.key, gone)
                self._forget(s.key, gone)
                self._counts[s.key] = max(self._counts.get(s.key, 0) - len(gone), 0)
                return len(gone)

        return await self._run(run)

    async def truncate(self, scope: ScopeLike) -> int:
        """Remove every entry of one scope (ModelCache's ``truncate_by_model``); other scopes keep theirs."""
        s = Scope.parse(scope)
        await self.open()

        def run() -> int:
            with self._scope_lock(s.key):
                n = self.store.truncate(s.key)
                self.index.drop(s.key)
                self._forget(s.key, None)
                self._counts[s.key] = 0
                return n

        return await self._run(run)

    async def register(self, scope: ScopeLike) -> bool:
        """Create the scope (ModelCache's ``register``); True if it was new."""
        s = Scope.parse(scope)
        await self.open()
        return await self._run(self.store.register, s.key, None)

    # feedback ----------------------------------------------------------------------------------------

    def _load_feedback(self, scope: str) -> ScopeFeedback:
        """The scope's feedback state, read from the store the first time. Call with the scope's lock held,
        so no remove, truncate or eviction slips between the read and the state."""
        state = self._feedback.get(scope)
        if state is None:
            state = ScopeFeedback(self.store.list_feedback(scope, None, newest_first=False, vectors=True))
            self._feedback[scope] = state
        return state

    def _feedback_sync(self, scope: str) -> ScopeFeedback:
        with self._scope_lock(scope):
            return self._load_feedback(scope)

    async def feedback(
        self,
        scope: ScopeLike,
        entry_id: int,
        messages: Any,
        right: bool,
        *,
        prompt: str | None = None,
        similarity: float | None = None,
    ) -> FeedbackRecord:
        """Mark the hit of entry ``entry_id`` on the probe ``messages`` (or a completion ``prompt``) right or
        wrong. The mark is stored and counts at once for the entry (see ``_feedback``); the returned record
        carries the entry's own threshold after it. ``similarity`` is the cosine the hit was served at (the
        ``x-datapilot-cache-similarity`` header); without it, it is computed from the vectors.

        An entry that is not in the scope raises ``NotFoundError``, bad input ``InvalidRequestError``;
        neither stores anything."""
        s = Scope.parse(scope)
        if not isinstance(entry_id, int) or isinstance(entry_id, bool):
            raise InvalidRequestError("id must be the integer id of a cached entry", param="id")
        if not isinstance(right, bool):
            raise InvalidRequestError("right must be true or false", param="right")
        if similarity is not None and (
            isinstance(similarity, bool)
            or not isinstance(similarity, int | float)
            or not -1.001 <= float(similarity) <= 1.001
        ):
            raise InvalidRequestError("similarity must be a number between -1 and 1", param="similarity")
        key = self._key(messages, prompt, "")
        await self.open()
        policy = self.policy(s)
        found = await self._run(self.store.entry_with_vector, s.key, entry_id, time.time())
        if found is None:
            raise NotFoundError(f"no cached entry {entry_id} in the scope {s.to_dict()}", param="id")
        entry, entry_vector = found
        qvec, _ = await self._embed_key(policy, key)
        if similarity is None:
            if len(entry_vector) != len(qvec):
                raise InvalidRequestError("the entry was embedded by another embedder: give the similarity")
            similarity = float(np.dot(qvec, entry_vector))
        base = policy.threshold_long if len(key.question) > policy.long_text_chars else policy.threshold_short
        record = FeedbackRecord(
            id=0,
            scope=s.key,
            entry_id=entry_id,
            probe=key.question,
            context_hash=key.context_hash,
            similarity=float(similarity),
            right=right,
            created_at=time.time(),
            question=entry.question,
            vector=np.asarray(qvec, dtype=np.float32),
        )

        def run() -> FeedbackRecord:
            with self._scope_lock(s.key):
                state = self._load_feedback(s.key)
                stored = self.store.insert_feedback(record)
                if stored is None:  # removed since it was read
                    raise NotFoundError(f"no cached entry {entry_id} in the scope {s.to_dict()}", param="id")
                record.id = stored
                record.entry_threshold = state.add(record, base, policy.target_precision)
            return record

        return await self._run(run)

    async def feedback_log(self, scope: ScopeLike, limit: int = 100, offset: int = 0) -> list[FeedbackRecord]:
        """A scope's marks, newest first, each with the question its hit was served under."""
        s = Scope.parse(scope)
        await self.open()
        return await self._run(self.store.list_feedback, s.key, limit, offset)

    async def feedback_pairs(self, scope: ScopeLike) -> list[dict[str, Any]]:
        """Every mark of a scope, oldest first, as a labelled pair ``{"a": stored question, "b": probe,
        "label": 1 | 0}``: the shape of the repository's pair files (benchmarks, reranker training)."""
        s = Scope.parse(scope)
        await self.open()
        records = await self._run(lambda: self.store.list_feedback(s.key, None, newest_first=False))
        return [r.pair() for r in records]

    async def learned_rules(self, scope: ScopeLike) -> list[str]:
        """The verifier rules the scope's feedback taught it (see ``_feedback``), sorted."""
        s = Scope.parse(scope)
        await self.open()
        state = await self._run(self._feedback_sync, s.key)
        return sorted(state.learned_rules(self.policy(s).target_precision))

    def entry_threshold(self, scope: ScopeLike, entry_id: int, long: bool = False) -> float:
        """The threshold a lookup applies to this entry now: the scope's (short or ``long``), or the
        entry's own once feedback moved it (only as far as this process has loaded the scope's marks)."""
        s = Scope.parse(scope)
        policy = self.policy(s)
        base = policy.threshold_long if long else policy.threshold_short
        state = self._feedback.get(s.key)
        return base if state is None else state.threshold(entry_id, base, policy.target_precision)

    # reading -----------------------------------------------------------------------------------------

    async def stats(self, scope: ScopeLike, window: int = 10_000) -> Stats:
        s = Scope.parse(scope)
        await self.open()

        def run() -> Stats:
            if self._writer is not None:
                self._writer.flush()
            records = self.store.read_log(s.key, window)
            queries, hits = self.store.log_totals(s.key)
            latencies = [r.latency_ms for r in records]
            lookups = [r.lookup_ms for r in records]
            return Stats(
                s.to_dict(),
                self.store.count(s.key),
                queries,
                hits,
                round(hits / queries, 4) if queries else 0.0,
                percentile(latencies, 50),
                percentile(latencies, 99),
                percentile(lookups, 50),
                percentile(lookups, 99),
            )

        return await self._run(run)

    async def query_log(
        self, scope: ScopeLike | None = None, limit: int = 100, *, where: Callable[[Scope], bool] | None = None
    ) -> list[LogRecord]:
        """The newest rows of the query log: of ``scope``, else of every scope (that ``where`` keeps: a
        tenant's own scopes, say)."""
        key = Scope.parse(scope).key if scope is not None else None
        await self.open()

        def run() -> list[LogRecord]:
            if self._writer is not None:
                self._writer.flush()
            within = None
            if where is not None:
                within = [k for k in self.store.log_scope_keys() if where(Scope.from_key(k))]
            return self.store.read_log(key, limit, within=within)

        return await self._run(run)

    async def entries(self, scope: ScopeLike, limit: int = 100, offset: int = 0) -> list[Entry]:
        s = Scope.parse(scope)
        await self.open()
        return await self._run(self.store.list_entries, s.key, limit, offset)

    async def scopes(self) -> list[Scope]:
        await self.open()
        return [Scope.from_key(k) for k in await self._run(self.store.scope_keys)]


class SyncSemanticCache:
    """Blocking wrapper: runs the async cache on a private event loop thread."""

    def __init__(self, cache: SemanticCache) -> None:
        self.cache = cache
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cache-sync-loop", daemon=True)
        self._thread.start()
        self._call(cache.open())

    def _call(self, work: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()  # type: ignore[arg-type]

    def query(self, scope: ScopeLike, messages: Any = None, **kw: Any) -> CacheResult:
        return self._call(self.cache.query(scope, messages, **kw))

    def insert(self, scope: ScopeLike, messages: Any = None, answer: str = "", **kw: Any) -> int:
        return self._call(self.cache.insert(scope, messages, answer, **kw))

    def insert_many(self, scope: ScopeLike, items: Iterable[tuple[Any, str]], **kw: Any) -> list[int]:
        return self._call(self.cache.insert_many(scope, items, **kw))

    def remove(self, scope: ScopeLike, ids: list[int]) -> int:
        return self._call(self.cache.remove(scope, ids))

    def truncate(self, scope: ScopeLike) -> int:
        return self._call(self.cache.truncate(scope))

    def stats(self, scope: ScopeLike) -> Stats:
        return self._call(self.cache.stats(scope))

    def feedback(self, scope: ScopeLike, entry_id: int, messages: Any, right: bool, **kw: Any) -> FeedbackRecord:
        return self._call(self.cache.feedback(scope, entry_id, messages, right, **kw))

    def feedback_log(self, scope: ScopeLike, limit: int = 100, offset: int = 0) -> list[FeedbackRecord]:
        return self._call(self.cache.feedback_log(scope, limit, offset))

    def feedback_pairs(self, scope: ScopeLike) -> list[dict[str, Any]]:
        return self._call(self.cache.feedback_pairs(scope))

    def learned_rules(self, scope: ScopeLike) -> list[str]:
        return self._call(self.cache.learned_rules(scope))

    def close(self) -> None:
        self._call(self.cache.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncSemanticCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
