"""The lexical channel for Chinese (CJK) questions: shared content terms, next to the embedding.

all-MiniLM-L6-v2 is an English model. It embeds most Chinese questions close together, so for Chinese
its nearest stored question is the right one for under half of the paraphrases on our chat sets, while
the share of content characters and character pairs the two questions have in common ranks the right
one first for most of them (docs/cache.md has the figures). So a question with CJK text is compared by
both: ``similarity = cosine + weight × (overlap - OFFSET)``, where ``overlap`` is the Jaccard overlap of
the two questions' content terms (CJK characters and character pairs outside particles, question words
and question frames such as "有什么区别", plus Latin words). Questions sharing their content score above
their cosine and questions sharing only a frame score below it; the threshold, the margin, feedback
and calibration all work on that one similarity. English questions keep their cosine unchanged.

Retrieval has the same problem as scoring: the right Chinese entry is often not among the embedding's
nearest few. ``LexicalIndex`` keeps an inverted index of each scope's CJK entries (only those: an
English scope costs nothing) and returns the entries sharing the most rare terms with the question; the
cache scores them next to the vector index's candidates. The index lives in this process's memory: it is
built from the rows on the first Chinese lookup in a scope, then kept up to date by this process's
inserts and removals, and, at most once every ``REFRESH_S`` seconds of Chinese lookups, by reading the
rows other processes sharing the store added since (ids only grow). Rows another process removed are
dropped at lookup, when their row is not found.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from datapilot.cache._key import normalise
from datapilot.cache._verify import _ALIASES, _CJK_CHAR, _CJK_RUN, _FILLERS, _LATIN, _SAME_NAME, cjk_content

OFFSET = 0.2  # the overlap at which the lexical term is neutral: above it adds, below it takes away
REFRESH_S = 1.0  # how often a scope's index reads the rows other processes added

# Question frames: words that say what kind of answer is wanted, not what about. Two questions that share
# only "有什么区别" share nothing ("MySQL和PostgreSQL有什么区别" / "古筝和古琴有什么区别").
_FRAMES = sorted(
    """区别 差别 差异 不同 原因 为什么 怎么办 怎么回事 方法 办法 技巧 诀窍 注意 事项 问题 东西 意思 作用 好处 需要
    可以 推荐 比较 哪些 哪个 多少 什么 怎么 如何 怎样 有没有 是不是 要不要 能不能 一下 好的 最好 主要 一般 通常
    到底 具体 关于 之间 以及 还有 或者 还是""".split(),
    key=len,
    reverse=True,
)
# Terms in more than this share of a scope's CJK entries (and over 50 of them) say little about which
# entry a question is: retrieval skips them (scoring still counts them).
_COMMON = 0.01


def _terms(text: str) -> frozenset[str]:
    """The content terms of a question with CJK text (empty for one without): content characters,
    adjacent content-character pairs, and Latin words outside fillers."""
    if not _CJK_CHAR.search(text):
        return frozenset()
    for pattern, replacement in _ALIASES:
        text = pattern.sub(replacement, text)
    text = normalise(text)
    runs = _CJK_RUN.findall(text)
    for i, run in enumerate(runs):
        for frame in _FRAMES:
            if frame in run:
                run = runs[i] = run.replace(frame, " " * len(frame))
    chars, pairs = cjk_content(runs)
    latin = _LATIN.findall(_CJK_RUN.sub(" ", text))
    return frozenset(chars | pairs | {_SAME_NAME.get(w, w) for w in latin if w not in _FILLERS})


features = lru_cache(maxsize=65536)(_terms)  # for questions asked and candidates scored; the index uses _terms


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap of two questions' content terms (0 when either has none)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def hybrid(cosine: float, lexical: float, weight: float) -> float:
    return cosine + weight * (lexical - OFFSET)


class _ScopeIndex:
    """One scope's postings: a term's hash -> the ids of the entries with it (an ``array`` of int64, ids
    appended in order), and each live entry's number of terms. A removed entry leaves its ids in the
    postings until a compaction; lookups skip ids that are not live. About 10 bytes per (entry, term)."""

    __slots__ = ("checked", "dead", "postings", "seen", "sizes")

    def __init__(self) -> None:
        self.postings: dict[int, array[int]] = {}
        self.sizes: dict[int, int] = {}
        self.dead = 0  # postings of removed entries not compacted away yet
        self.seen = -1  # the highest id read from the rows
        self.checked = time.monotonic()  # when the rows were last read

    def add(self, entry_id: int, question: str) -> None:
        if entry_id in self.sizes:
            return  # indexed already (this process's insert, read again from the rows)
        found = _terms(question)
        if not found:
            return
        self.sizes[entry_id] = len(found)
        for t in found:
            ids = self.postings.get(hash(t))
            if ids is None:
                ids = self.postings[hash(t)] = array("q")
            ids.append(entry_id)

    def remove(self, entry_id: int) -> None:
        size = self.sizes.pop(entry_id, None)
        if size is None:
            return
        self.dead += size
        if self.dead > 1000 and self.dead > sum(self.sizes.values()):
            self.compact()

    def compact(self) -> None:
        live = np.fromiter(self.sizes, dtype=np.int64, count=len(self.sizes))
        for term, ids in list(self.postings.items()):
            kept = np.frombuffer(ids, dtype=np.int64)
            kept = kept[np.isin(kept, live)]
            if len(kept):
                self.postings[term] = array("q", kept.tobytes())
            else:
                del self.postings[term]
        self.dead = 0


class LexicalIndex:
    """Per scope: an inverted index of its CJK entries' content terms (by hash; ``features`` decides the
    exact overlap later, from the questions). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str, _ScopeIndex] = {}

    def built(self, scope: str) -> bool:
        return scope in self._scopes

    def build(self, scope: str, rows: Iterable[tuple[int, str]]) -> None:
        with self._lock:
            self._scopes[scope] = _ScopeIndex()
        self.add(scope, rows, from_rows=True)

    def due(self, scope: str) -> int | None:
        """The highest id read from the rows when the scope's index should read newer ones now (claimed:
        the next call says None until ``REFRESH_S`` has passed), else None."""
        with self._lock:
            index = self._scopes.get(scope)
            now = time.monotonic()
            if index is None or now - index.checked < REFRESH_S:
                return None
            index.checked = now
            return index.seen

    def add(self, scope: str, rows: Iterable[tuple[int, str]], *, from_rows: bool = False) -> None:
        """Index these entries, if the scope's index is built (an unbuilt one is built from the rows later).
        ``from_rows``: read from the store, so later reads start after them."""
        with self._lock:
            index = self._scopes.get(scope)
            if index is None:
                return
            for entry_id, question in rows:
                if from_rows and entry_id > index.seen:
                    index.seen = entry_id
                index.add(entry_id, question)

    def remove(self, scope: str, ids: Iterable[int]) -> None:
        with self._lock:
            index = self._scopes.get(scope)
            if index is not None:
                for entry_id in ids:
                    index.remove(entry_id)

    def drop(self, scope: str) -> None:
        with self._lock:
            self._scopes.pop(scope, None)

    def search(self, scope: str, query: frozenset[str], k: int) -> list[int]:
        """Up to ``k`` live entries of ``scope`` sharing the most of ``query``'s rarer terms (relative to
        their size), best first."""
        with self._lock:
            index = self._scopes.get(scope)
            if index is None or not index.sizes or not query:
                return []
            limit = max(50, int(len(index.sizes) * _COMMON))
            # Character pairs and words find an entry; single characters only when there is nothing else.
            keys = [t for t in query if len(t) > 1] or list(query)
            found = [
                posting for t in keys if (posting := index.postings.get(hash(t))) is not None and len(posting) <= limit
            ]
            if not found:
                return []
            ids, shared = np.unique(
                np.concatenate([np.frombuffer(a, dtype=np.int64) for a in found]), return_counts=True
            )
            if len(ids) > 8 * k:  # the most shared first; their sizes decide among them
                pool = np.argpartition(-shared, 8 * k)[: 8 * k]
                ids, shared = ids[pool], shared[pool]
            sizes = np.asarray([index.sizes.get(int(i), 0) for i in ids], dtype=np.float64)
        live = sizes > 0
        ids, shared, sizes = ids[live], shared[live], sizes[live]
        score = shared / (len(query) + sizes - shared)  # Jaccard, counting only the rarer terms shared
        top = np.argsort(-score, kind="stable")[:k]
        return [int(i) for i in ids[top]]
