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

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from datapilot.cache._key import normalise
from datapilot.cache._verify import _ALIASES, _CJK_CHAR, _CJK_FUNCTION, _CJK_RUN, _FILLERS, _LATIN, _SAME_NAME

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


@lru_cache(maxsize=65536)
def features(text: str) -> frozenset[str]:
    """The content terms of a question with CJK text (empty for one without): content characters,
    adjacent content-character pairs, and Latin words outside fillers."""
    if not _CJK_CHAR.search(text):
        return frozenset()
    for pattern, replacement in _ALIASES:
        text = pattern.sub(replacement, text)
    text = normalise(text)
    terms: set[str] = set()
    for run in _CJK_RUN.findall(text):
        for frame in _FRAMES:
            if frame in run:
                run = run.replace(frame, " " * len(frame))
        chars = [c if c not in _CJK_FUNCTION else " " for c in run]
        terms.update(c for c in chars if c != " ")
        terms.update(a + b for a, b in itertools.pairwise(chars) if a != " " and b != " ")
    latin = _LATIN.findall(_CJK_RUN.sub(" ", text))
    terms.update(_SAME_NAME.get(w, w) for w in latin if w not in _FILLERS)
    return frozenset(terms)


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap of two questions' content terms (0 when either has none)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def hybrid(cosine: float, lexical: float, weight: float) -> float:
    return cosine + weight * (lexical - OFFSET)


class LexicalIndex:
    """Per scope: each CJK entry's terms and an inverted index of them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._terms: dict[str, dict[int, frozenset[str]]] = {}
        self._postings: dict[str, dict[str, set[int]]] = {}
        self._seen: dict[str, int] = {}  # the highest id read from the rows
        self._checked: dict[str, float] = {}  # when the rows were last read

    def built(self, scope: str) -> bool:
        return scope in self._terms

    def build(self, scope: str, rows: Iterable[tuple[int, str]]) -> None:
        with self._lock:
            self._terms[scope] = {}
            self._postings[scope] = {}
            self._seen[scope] = -1
            self._checked[scope] = time.monotonic()
        self.add(scope, rows, from_rows=True)

    def due(self, scope: str) -> int | None:
        """The highest id read from the rows when the scope's index should read newer ones now (claimed:
        the next call says None until ``REFRESH_S`` has passed), else None."""
        with self._lock:
            now = time.monotonic()
            if scope not in self._terms or now - self._checked.get(scope, 0.0) < REFRESH_S:
                return None
            self._checked[scope] = now
            return self._seen.get(scope, -1)

    def add(self, scope: str, rows: Iterable[tuple[int, str]], *, from_rows: bool = False) -> None:
        """Index these entries, if the scope's index is built (an unbuilt one is built from the rows later).
        ``from_rows``: read from the store, so later reads start after them."""
        with self._lock:
            terms = self._terms.get(scope)
            if terms is None:
                return
            postings = self._postings[scope]
            for entry_id, question in rows:
                if from_rows and entry_id > self._seen.get(scope, -1):
                    self._seen[scope] = entry_id
                found = features(question)
                if found:
                    terms[entry_id] = found
                    for t in found:
                        postings.setdefault(t, set()).add(entry_id)

    def remove(self, scope: str, ids: Iterable[int]) -> None:
        with self._lock:
            terms = self._terms.get(scope)
            if terms is None:
                return
            postings = self._postings[scope]
            for entry_id in ids:
                for t in terms.pop(entry_id, ()):
                    ids_with = postings.get(t)
                    if ids_with is not None:
                        ids_with.discard(entry_id)
                        if not ids_with:
                            del postings[t]

    def drop(self, scope: str) -> None:
        with self._lock:
            self._terms.pop(scope, None)
            self._postings.pop(scope, None)
            self._seen.pop(scope, None)
            self._checked.pop(scope, None)

    def search(self, scope: str, query: frozenset[str], k: int) -> list[tuple[int, float]]:
        """The ``k`` entries of ``scope`` with the highest overlap with ``query``, best first, among those
        sharing at least one of its rarer terms."""
        with self._lock:
            terms = self._terms.get(scope)
            if not terms or not query:
                return []
            postings = self._postings[scope]
            limit = max(50, int(len(terms) * _COMMON))
            shared: Counter[int] = Counter()
            # Character pairs and words find an entry; single characters only when there is nothing else.
            keys = [t for t in query if len(t) > 1] or list(query)
            for t in keys:
                ids_with = postings.get(t)
                if ids_with is not None and len(ids_with) <= limit:
                    shared.update(ids_with)
            # The most shared rare terms first; the exact overlap decides among those.
            pool = [i for i, _ in shared.most_common(4 * k)]
            scored = [(i, overlap(query, terms[i])) for i in pool]
        scored.sort(key=lambda x: -x[1])
        return scored[:k]
