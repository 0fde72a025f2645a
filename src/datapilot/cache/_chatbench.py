"""The chat-traffic benchmark: precision, recall and false hits by kind and language on labelled chat
pairs, the traffic the cache exists for (``benchmarks/data/cache_pairs_dev.jsonl``, and a held-out file
beside it that nothing is tuned on).

Each line is one case: a question asked earlier (``stored``, after ``stored_context`` turns) whose answer
is in the cache, a new message (``probe``, after ``probe_context``) and whether serving the stored answer
to it is right (``hit``). Kinds: ``repeat_variant`` (the same question typed differently),
``paraphrase``, ``hard_negative`` (one key term differs: a number, version, flag, entity, negation...),
``context_different`` (the same follow-up after another conversation), ``context_reworded`` (after a
trivially reworded one) and ``unrelated`` (no stored question; ``stored`` is null).

Protocol: every stored question goes into one scope with its line id as the answer; every probe is
looked up. A hit is right only when the line says ``hit`` and the answer is that line's own id; any
other hit is a false hit. Precision = right hits / hits; recall = right hits / lines that should hit;
false-hit rate = false hits / probes. The same figures by kind and by language, and a sweep of the
cosine threshold with everything else at the scope's policy.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.cache._cache import SemanticCache
from datapilot.cache._key import key_for_messages
from datapilot.cache._types import CacheResult, Scope
from datapilot.cache._verify import _CJK_CHAR
from datapilot.core.config import CachePolicy, CacheSettings
from datapilot.core.errors import InvalidRequestError

SCOPE = Scope("chat-bench")
KINDS = ("repeat_variant", "paraphrase", "hard_negative", "context_different", "context_reworded", "unrelated")
CHAT_SWEEP = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90)


@dataclass(slots=True, frozen=True)
class ChatCase:
    id: str
    lang: str
    kind: str
    stored: str | None
    probe: str
    hit: bool
    why: str = ""
    stored_context: tuple[tuple[str, str], ...] = ()
    probe_context: tuple[tuple[str, str], ...] = ()
    answer: str = ""  # the answer its stored question is kept under: its own id, or the first case asking the same

    @property
    def expected(self) -> str:
        return self.answer or self.id

    def stored_messages(self) -> list[dict[str, str]]:
        return [
            *({"role": r, "content": c} for r, c in self.stored_context),
            {"role": "user", "content": self.stored or ""},
        ]

    def probe_messages(self) -> list[dict[str, str]]:
        return [*({"role": r, "content": c} for r, c in self.probe_context), {"role": "user", "content": self.probe}]


def _turns(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise InvalidRequestError(f"{where}: a context is a list of {{role, content}} objects")
    return tuple((str(t["role"]), str(t["content"])) for t in value)


def load_cases(path: Path) -> list[ChatCase]:
    """The cases of a chat-pair JSONL file; a malformed line is an error naming it. Plain labelled pairs
    (``{"a", "b", "label"}``: QQP's shape, and what ``/api/cache/feedback/export`` writes) are read too,
    as paraphrases (label 1) and hard negatives (label 0)."""
    cases: list[ChatCase] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            row = json.loads(line)
            if "a" in row and "probe" not in row:
                a, b, label = str(row["a"]), str(row["b"]), bool(int(row["label"]))
                lang = "zh" if _CJK_CHAR.search(a + b) else "en"
                kind = "paraphrase" if label else "hard_negative"
                cases.append(ChatCase(f"{path.stem}-{n}", lang, kind, a, b, label))
                continue
            case = ChatCase(
                str(row["id"]),
                str(row["lang"]),
                str(row["kind"]),
                row.get("stored"),
                str(row["probe"]),
                bool(row["hit"]),
                str(row.get("why", "")),
                _turns(row.get("stored_context"), where),
                _turns(row.get("probe_context"), where),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(f"{where}: not a chat pair ({type(exc).__name__}: {exc})") from None
        if case.kind not in KINDS:
            raise InvalidRequestError(f"{where}: kind must be one of {', '.join(KINDS)}, not {case.kind!r}")
        if case.stored is None and case.hit:
            raise InvalidRequestError(f"{where}: a case with no stored question cannot be a hit")
        cases.append(case)
    return cases


def default_chat_file(name: str = "cache_pairs_dev.jsonl") -> Path | None:
    """The shipped chat set in the repository's ``benchmarks/data`` (a checkout, not an installed wheel)."""
    for folder in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[3]):
        path = folder / "benchmarks" / "data" / name
        if path.is_file():
            return path
    return None


@dataclass(slots=True)
class Tally:
    probes: int = 0
    should_hit: int = 0
    hits: int = 0
    right: int = 0

    @property
    def false_hits(self) -> int:
        return self.hits - self.right

    def add(self, case: ChatCase, result: CacheResult) -> None:
        self.probes += 1
        self.should_hit += case.hit
        if result.hit:
            self.hits += 1
            self.right += case.hit and result.answer == case.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "probes": self.probes,
            "should_hit": self.should_hit,
            "hits": self.hits,
            "right_hits": self.right,
            "false_hits": self.false_hits,
            "precision": round(self.right / self.hits, 4) if self.hits else None,
            "recall": round(self.right / self.should_hit, 4) if self.should_hit else None,
            "false_hit_rate": round(self.false_hits / self.probes, 4) if self.probes else 0.0,
        }


@dataclass(slots=True)
class ChatScore:
    label: str
    overall: Tally = field(default_factory=Tally)
    by_lang: dict[str, Tally] = field(default_factory=dict)
    by_kind: dict[tuple[str, str], Tally] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)  # why should-hit probes missed
    false_hits: list[dict[str, str]] = field(default_factory=list)
    missed: list[dict[str, str]] = field(default_factory=list)

    def add(self, case: ChatCase, result: CacheResult) -> None:
        self.overall.add(case, result)
        self.by_lang.setdefault(case.lang, Tally()).add(case, result)
        self.by_kind.setdefault((case.kind, case.lang), Tally()).add(case, result)
        if result.hit and not (case.hit and result.answer == case.expected):
            self.false_hits.append({"id": case.id, "probe": case.probe, "served": result.hit_query or ""})
        elif case.hit and not result.hit:
            self.reasons[result.reason] += 1
            self.missed.append({"id": case.id, "probe": case.probe, "stored": case.stored or "", "why": result.reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            **self.overall.to_dict(),
            "by_lang": {k: v.to_dict() for k, v in sorted(self.by_lang.items())},
            "by_kind": {f"{k}/{lang}": v.to_dict() for (k, lang), v in sorted(self.by_kind.items())},
            "miss_reasons": dict(self.reasons.most_common()),
        }


@dataclass(slots=True)
class ChatReport:
    data: str
    cases: int
    policy: dict[str, Any]
    default: ChatScore
    sweep: list[ChatScore]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "cases": self.cases,
            "policy": self.policy,
            "default": self.default.to_dict(),
            "sweep": [s.to_dict() for s in self.sweep],
            "false_hits": self.default.false_hits,
            "missed": self.default.missed,
        }


async def run_chat_bench(
    data: Path,
    *,
    settings: CacheSettings | None = None,
    home: Path | None = None,
    thresholds: tuple[float, ...] = CHAT_SWEEP,
    policy: dict[str, Any] | None = None,
    progress: Any = None,
) -> ChatReport:
    """Store every case's question, probe with every case, score at the policy and across ``thresholds``."""
    cases = load_cases(data)
    if not cases:
        raise InvalidRequestError(f"no chat pairs in {data}")
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="dp-chat-bench-") as tmp:
        async with SemanticCache(settings or CacheSettings(), home or Path(tmp)) as cache:
            await cache.truncate(SCOPE)
            if policy:
                await cache.set_policy(SCOPE, policy)
            # A question stored once, however many cases ask it (labelled pairs often share one side).
            first: dict[str, str] = {}
            for c in cases:
                if c.stored is not None:
                    first.setdefault(json.dumps(c.stored_messages(), ensure_ascii=False), c.id)
            cases = [
                replace(c, answer=first[json.dumps(c.stored_messages(), ensure_ascii=False)]) if c.stored else c
                for c in cases
            ]
            say(f"storing {len(first)} questions")
            await cache.insert_many(SCOPE, [(json.loads(m), answer) for m, answer in first.items()])
            say(f"probing with {len(cases)} messages")
            default = ChatScore("default")
            vectors = []
            for case in cases:
                result = await cache.query(SCOPE, case.probe_messages(), log=False)
                default.add(case, result)
                vectors.append(result.vectors)
            base = cache.policy(SCOPE)
            sweep = [
                await asyncio.to_thread(
                    _score_at,
                    cache,
                    cases,
                    vectors,
                    base.model_copy(update={"threshold_short": t, "threshold_long": t}),
                    f"{t:.2f}",
                )
                for t in thresholds
            ]
            await cache.truncate(SCOPE)
    return ChatReport(str(data), len(cases), base.model_dump(), default, sweep)


def _score_at(
    cache: SemanticCache,
    cases: list[ChatCase],
    vectors: list[tuple[np.ndarray, np.ndarray | None]],
    policy: CachePolicy,
    label: str,
) -> ChatScore:
    score = ChatScore(label)
    for case, (qvec, cvec) in zip(cases, vectors, strict=True):
        result, _ = cache._lookup_sync(SCOPE.key, key_for_messages(case.probe_messages()), qvec, cvec, policy)
        score.add(case, result)
    return score


CALIBRATION_SWEEP = tuple(round(0.50 + 0.01 * i, 2) for i in range(50))


@dataclass(slots=True)
class Calibration:
    target_precision: float
    threshold: float | None  # the lowest threshold whose precision reaches the target; None: none does
    chosen: ChatScore | None
    sweep: list[ChatScore]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_precision": self.target_precision,
            "threshold": self.threshold,
            "at_threshold": self.chosen.to_dict() if self.chosen else None,
            "sweep": [{"threshold": s.label, **s.overall.to_dict()} for s in self.sweep],
        }


def choose_threshold(sweep: list[ChatScore], target_precision: float) -> Calibration:
    """The threshold with the most right hits among those whose precision reaches the target (the lowest
    such threshold on a tie); ``None`` when no threshold reaches it."""
    best: ChatScore | None = None
    for score in sweep:
        t = score.overall
        precision = t.right / t.hits if t.hits else 0.0
        if t.hits and precision >= target_precision and (best is None or t.right > best.overall.right):
            best = score
    return Calibration(target_precision, float(best.label) if best else None, best, sweep)


async def calibrate(
    data: Path,
    target_precision: float,
    *,
    settings: CacheSettings | None = None,
    policy: dict[str, Any] | None = None,
    progress: Any = None,
) -> Calibration:
    """Sweep the cosine threshold over labelled pairs (chat pairs or ``a``/``b``/``label`` pairs) with the
    rest of the scope's policy as configured, and choose the threshold for ``target_precision``."""
    report = await run_chat_bench(
        data, settings=settings, thresholds=CALIBRATION_SWEEP, policy=policy, progress=progress
    )
    return choose_threshold(report.sweep, target_precision)
