"""An in-memory BM25 keyword index per space, updated in place as chunks come and go.

Okapi BM25 (k1 = 1.2, b = 0.75) with the always-positive idf ``log(1 + (N - df + 0.5) / (df + 0.5))``.
Terms are lower-cased words with English stop words dropped and a light suffix stemmer applied to
documents and queries alike; CJK text is indexed as single characters and character pairs.
"""

from __future__ import annotations

import heapq
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable

_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+|[a-z0-9]+(?:[._-][a-z0-9]+)*|[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor
    not now of off on once only or other our ours ourselves out over own same she should so some such than that
    the their theirs them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself yourselves""".split()
)


def stem(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "zes", "sses")):
                return word[:-1]
            return word[: len(word) - len(suffix)] + keep
    return word


def terms(text: str) -> list[str]:
    out: list[str] = []
    for token in _WORD.findall(text.lower()):
        if _CJK.match(token):
            out.extend(token)
            out.extend(token[i : i + 2] for i in range(len(token) - 1))
            continue
        if token in STOP_WORDS:
            continue
        out.append(stem(token))
        if "." in token or "_" in token or "-" in token:  # "datapilot.rag" also matches "rag"
            out.extend(stem(p) for p in re.split(r"[._-]", token) if p and p not in STOP_WORDS)
    return out


class BM25Index:
    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._postings: dict[str, dict[int, int]] = {}
        self._lengths: dict[int, int] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lengths)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._lengths

    def add(self, ids: Iterable[int], texts: Iterable[str]) -> None:
        prepared = [(i, Counter(terms(t))) for i, t in zip(ids, texts, strict=True)]
        with self._lock:
            for chunk_id, counts in prepared:
                if chunk_id in self._lengths:
                    self._remove_one(chunk_id)
                for term, tf in counts.items():
                    self._postings.setdefault(term, {})[chunk_id] = tf
                n = sum(counts.values())
                self._lengths[chunk_id] = n
                self._terms[chunk_id] = tuple(counts)
                self._total += n

    def remove(self, ids: Iterable[int]) -> None:
        with self._lock:
            for chunk_id in ids:
                if chunk_id in self._lengths:
                    self._remove_one(chunk_id)

    def _remove_one(self, chunk_id: int) -> None:
        for term in self._terms.pop(chunk_id, ()):
            posting = self._postings.get(term)
            if posting is not None:
                posting.pop(chunk_id, None)
                if not posting:
                    del self._postings[term]
        self._total -= self._lengths.pop(chunk_id)

    def search(self, query: str, k: int, allow: Callable[[int], bool] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best (chunk id, score) pairs for ``query`` among the chunks ``allow`` accepts."""
        q = Counter(terms(query))
        with self._lock:
            n = len(self._lengths)
            if not n or not q:
                return []
            avg = self._total / n
            scores: dict[int, float] = {}
            k1, b, lengths = self.k1, self.b, self._lengths
            for term, qtf in q.items():
                posting = self._postings.get(term)
                if not posting:
                    continue
                idf = math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5)) * qtf
                for chunk_id, tf in posting.items():
                    norm = tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[chunk_id] / avg))
                    scores[chunk_id] = scores.get(chunk_id, 0.0) + idf * norm
        items: Iterable[tuple[int, float]] = scores.items()
        if allow is not None:
            items = ((i, s) for i, s in items if allow(i))
        return heapq.nlargest(k, items, key=lambda p: p[1])
