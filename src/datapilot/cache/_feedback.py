"""Feedback on cache hits: a mark says whether an entry's answer was right for the probe it was served to.

Marks act per entry, in two ways:

* A "wrong" mark demotes the entry for that kind of probe at once: a later probe whose normalised text
  equals a wrong-marked probe's, or whose vector has cosine >= ``WRONG_PROBE_COSINE`` to it, is not
  answered by that entry (reason ``feedback``). Other probes of the entry still hit.
* The marks, as (similarity, right) pairs, set the entry's own threshold: the lowest ``t`` at which the
  marked hits with similarity >= ``t`` are right at least ``target_precision`` of the time (see
  ``entry_threshold``). A probe below it is not answered by the entry (reason ``entry_threshold``).
  Wrong marks raise it at once; only enough right marks lower it again, and never more than
  ``MAX_LOOSENING`` below the scope's threshold.

Marks also act on the whole scope, through the verifier (``_guards``, ``_verify``): each mark is put to
the verifier's rules, and a rule that would have refused at least ``MIN_RULE_MARKS`` hits marked wrong,
and refuses hits marked right no more often than ``target_precision`` allows, is learned by the scope.
A learned rule then refuses every hit it fires on, marked or not (reason ``feedback:<rule>``), in a
scope whose verifier is off (``guards = false``), or, for ``term``, one whose English substitution rule
is off (``substitutions = false``). So three wrong marks on hits that differed in a number teach the
scope that its numbers matter, for all of its entries.

This is the online, per-entry threshold idea (each cached entry learns its own bound from labelled hits
with an error target) in its simplest estimator: the scope's threshold is the prior for every entry.

Lookups consult only ``ScopeFeedback`` in memory (loaded from the store's feedback table on a scope's
first lookup, then updated by each mark), so feedback adds no SQL to a lookup. Marks given through
another process on a shared store reach this one when it reopens the cache.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from datapilot.cache._guards import guard
from datapilot.cache._key import normalise
from datapilot.cache._types import FeedbackRecord

WRONG_PROBE_COSINE = 0.95  # a probe this close to one marked wrong for an entry is the same kind of probe
MAX_LOOSENING = 0.10  # an entry's own threshold never goes further below the scope's
WILSON_Z = 1.0  # below the scope threshold: for 0.95, 19 right marks and no wrong one per band
_STEP = 1e-6  # "just above" a marked similarity
MIN_RULE_MARKS = 3  # wrong marks a verifier rule must explain before a scope learns it


def wilson_lower(right: int, n: int, z: float = WILSON_Z) -> float:
    """The Wilson score interval's lower bound of a share ``right / n`` (0 when there is nothing)."""
    if n <= 0:
        return 0.0
    p = right / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - spread) / (1 + z2 / n)


def entry_threshold(marks: Sequence[tuple[float, bool]], base: float, target: float) -> float:
    """An entry's own threshold from its marks (similarity, right), the scope's threshold ``base`` and the
    operator's ``target`` precision: the lowest ``t`` at which the marked hits with similarity >= ``t``
    are right at least ``target`` of the time, within [base - MAX_LOOSENING, 1].

    At or above ``base`` the scope vouches for its hits: marks count as they are (``k`` right of ``n``
    passes when ``k >= target * n``) and no marks at all pass, so wrong marks tighten at once and the
    same number of right marks the target implies (19 per wrong one at 0.95) loosens again. Below
    ``base`` nothing vouches for a hit: the marks between ``t`` and ``base`` must reach the target by
    their Wilson lower bound too, and ``t`` stops at the lowest marked similarity, so one right mark
    never loosens anything.
    """
    if not marks:
        return base
    floor = max(base - MAX_LOOSENING, -1.0)
    sims = np.asarray([s for s, _ in marks], dtype=np.float64)
    order = np.argsort(sims)
    sims = sims[order]
    rights = np.asarray([r for _, r in marks], dtype=np.float64)[order]
    rights_from = np.concatenate([np.cumsum(rights[::-1])[::-1], [0.0]])  # rights among sims[i:]
    above = [base, *(s + _STEP for s in sims if s + _STEP > base)]
    below = [s for s in sims if floor <= s < base]
    candidates = np.unique(np.minimum(np.asarray([*below, *above], dtype=np.float64), 1.0))
    at_base = int(np.searchsorted(sims, base, side="left"))
    for t in candidates:
        first = int(np.searchsorted(sims, t, side="left"))
        n = len(sims) - first
        k = rights_from[first]
        if k < target * n - 1e-9:
            continue
        if t < base:
            band_right = round(k - rights_from[at_base])
            if wilson_lower(band_right, at_base - first) < target - 1e-9:
                continue
        return float(t)
    return 1.0


@dataclass(slots=True)
class EntryMarks:
    """One entry's marks: the (similarity, right) pairs, the probes marked wrong, and the verifier rule each
    marked pair trips with its mark (rule, right)."""

    marks: list[tuple[float, bool]] = field(default_factory=list)
    rules: list[tuple[str, bool]] = field(default_factory=list)
    wrong_texts: set[str] = field(default_factory=set)
    wrong_vectors: np.ndarray | None = None  # [n, d], L2-normalised
    thresholds: dict[tuple[float, float], float] = field(default_factory=dict)  # (base, target) -> own

    def add(self, similarity: float, right: bool, probe: str, vector: np.ndarray | None) -> None:
        self.marks.append((float(similarity), bool(right)))
        self.thresholds = {}
        if right:
            return
        self.wrong_texts.add(normalise(probe))
        if vector is not None:
            v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
            if self.wrong_vectors is None or self.wrong_vectors.shape[1] != v.shape[1]:
                self.wrong_vectors = v
            else:
                self.wrong_vectors = np.vstack([self.wrong_vectors, v])

    def threshold(self, base: float, target: float) -> float:
        own = self.thresholds.get((base, target))
        if own is None:
            own = entry_threshold(self.marks, base, target)
            self.thresholds[(base, target)] = own
        return own

    def rejects(self, asked: str, qvec: np.ndarray) -> bool:
        """Whether the probe (its normalised text, its vector) is of a kind marked wrong for this entry."""
        if asked in self.wrong_texts:
            return True
        w = self.wrong_vectors
        if w is None or w.shape[1] != len(qvec):
            return False
        return bool(float(np.max(w @ qvec)) >= WRONG_PROBE_COSINE)


class ScopeFeedback:
    """A scope's marks in memory, by entry. Writers serialise on a lock; lookups read without SQL."""

    def __init__(self, records: Iterable[FeedbackRecord] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, EntryMarks] = {}
        self._floors: dict[tuple[float, float], float] = {}
        self._learned: dict[float, frozenset[str]] = {}  # target -> the rules learned, until marks change
        for r in records:
            self._add(r)

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, record: FeedbackRecord) -> EntryMarks:
        marks = self._entries.get(record.entry_id)
        if marks is None:
            marks = self._entries[record.entry_id] = EntryMarks()
        marks.add(record.similarity, record.right, record.probe, record.vector)
        rule = guard(record.probe, record.question) if record.question else None
        if rule is not None:
            marks.rules.append((rule, record.right))
        return marks

    def learned_rules(self, target: float) -> frozenset[str]:
        """The verifier rules the marks taught: each refused at least ``MIN_RULE_MARKS`` hits marked wrong,
        and of all the marked hits it refused, at least ``target`` were wrong. The marks of removed entries
        are gone with them, as from the store."""
        found = self._learned.get(target)
        if found is None:
            with self._lock:
                wrong: Counter[str] = Counter()
                right: Counter[str] = Counter()
                for marks in self._entries.values():
                    for rule, was_right in marks.rules:
                        (right if was_right else wrong)[rule] += 1
                found = frozenset(
                    r for r, n in wrong.items() if n >= MIN_RULE_MARKS and n >= target * (n + right[r]) - 1e-9
                )
                self._learned[target] = found
        return found

    def add(self, record: FeedbackRecord, base: float, target: float) -> float:
        """Count one mark; returns the entry's own threshold for ``base`` and ``target`` after it."""
        with self._lock:
            marks = self._add(record)
            self._floors, self._learned = {}, {}
            return marks.threshold(base, target)

    def forget(self, entry_ids: Iterable[int]) -> None:
        with self._lock:
            for i in entry_ids:
                if self._entries.pop(i, None) is not None:
                    self._floors, self._learned = {}, {}

    def marks(self, entry_id: int) -> EntryMarks | None:
        return self._entries.get(entry_id)

    def threshold(self, entry_id: int, base: float, target: float) -> float:
        marks = self._entries.get(entry_id)
        if marks is None:
            return base
        with self._lock:
            return marks.threshold(base, target)

    def floor(self, base: float, target: float) -> float:
        """The lowest own threshold of any entry (``base`` if none is lower): where a lookup must look."""
        if not self._entries:
            return base
        found = self._floors.get((base, target))
        if found is None:
            with self._lock:
                found = min([base, *(m.threshold(base, target) for m in self._entries.values())])
                self._floors[(base, target)] = found
        return found

    def verdict(
        self, entry_id: int, similarity: float, base: float, target: float, asked: str, qvec: np.ndarray
    ) -> str | None:
        """Why feedback keeps this entry from answering this probe (None: it does not).

        ``asked`` is the probe's normalised question; ``base`` the scope threshold the lookup applies."""
        marks = self._entries.get(entry_id)
        if marks is None:
            return "below_threshold" if similarity < base else None
        if marks.rejects(asked, qvec):
            return "feedback"
        if similarity < self.threshold(entry_id, base, target):
            # "entry_threshold" when the scope's threshold alone would have let the probe through.
            return "entry_threshold" if similarity >= base else "below_threshold"
        return None
