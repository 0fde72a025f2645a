"""Rate limits and token budgets, enforced before a model is called; usage kept per tenant, key and model.

- ``SlidingWindow``: what was used in the last minute (requests or tokens), in buckets of at most a
  second, so a window costs a few dozen entries whatever the traffic.
- ``UsageLedger``: tokens and requests per UTC day, tenant, key and model, summed in memory (the
  budget check reads the sums, never the disk) and written to ``DATAPILOT_HOME/usage.db`` in batches,
  off the request path. The sums are seeded from the file at start and re-read from it after each
  write, so usage survives restarts and several servers sharing a home share their budgets.
- ``LimitGate``: what the model layer asks before each call (``admit``) and tells after it (the
  returned charge): the key's model scope (403), the key's tokens per minute, the model's requests
  and tokens per minute (shared by every key), and the tenant's daily and monthly token budgets (429).
  The key's requests per minute are counted once per HTTP request by ``admit_request``.

A limit on tokens admits a call while the window (or the budget) still has room, and charges the
call's real usage when it ends: the call that crosses the line is served, the next one waits. Calls
that are refused are not charged. Standard library only.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapilot.core.errors import RateLimitError
from datapilot.core.tenancy import Principal, current_principal, in_internal_call, require_scope
from datapilot.core.types import Usage

log = logging.getLogger("datapilot.limits")

WINDOW_S = 60.0  # rpm and tpm are per minute
RESOLUTION_S = 1.0  # a window's bucket width: its figures are at most this late to free room

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, tenant, key_id, model)
);
"""


class QuotaExceededError(RateLimitError):
    """A tenant's token budget is spent: 429 with OpenAI's ``insufficient_quota`` type and code."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


# --- time -----------------------------------------------------------------------------------------


_day_cache: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) of the last day asked for, and its name


def utc_day(at: float) -> str:
    """The UTC day of ``at`` (``2025-06-01``); the last answer is kept until its day ends (every call
    asks, so formatting is skipped on the request path)."""
    global _day_cache
    start, end, day = _day_cache
    if start <= at < end:
        return day
    start = at - at % 86400.0
    day = time.strftime("%Y-%m-%d", time.gmtime(at))
    _day_cache = (start, start + 86400.0, day)
    return day


def until_next_day(at: float) -> float:
    return 86400.0 - at % 86400.0


def until_next_month(at: float) -> float:
    t = time.gmtime(at)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) - at


def _in(seconds: float) -> str:
    seconds = max(1, int(-(-seconds // 1)))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


# --- sliding windows ------------------------------------------------------------------------------


class SlidingWindow:
    """Amounts added in the last ``window_s`` seconds (monotonic clock). Additions less than
    ``resolution_s`` apart share a bucket, which expires with its latest addition: never early."""

    __slots__ = ("_buckets", "_total", "resolution_s", "window_s")

    def __init__(self, window_s: float = WINDOW_S, resolution_s: float = RESOLUTION_S) -> None:
        self.window_s, self.resolution_s = window_s, resolution_s
        self._buckets: deque[list[float]] = deque()  # [first added, last added, amount]
        self._total = 0.0

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][1] + self.window_s <= now:
            self._total -= buckets.popleft()[2]
        if not buckets:
            self._total = 0.0  # no float drift across an idle period

    def used(self, now: float) -> int:
        self._expire(now)
        return int(self._total)

    def add(self, amount: float, now: float) -> None:
        if amount <= 0:
            return
        self._expire(now)
        buckets = self._buckets
        if buckets and now - buckets[-1][0] < self.resolution_s:
            last = buckets[-1]
            last[1] = max(last[1], now)
            last[2] += amount
        else:
            buckets.append([now, now, amount])
        self._total += amount

    def wait_s(self, limit: int, now: float, need: int = 1) -> float:
        """Seconds until ``need`` more fits under ``limit`` (0: it fits now)."""
        self._expire(now)
        excess = self._total + need - limit
        if excess <= 0:
            return 0.0
        for _, last_added, amount in self._buckets:
            excess -= amount
            if excess <= 0:
                return last_added + self.window_s - now
        return self.window_s  # more than the limit at once: a whole window


# --- the ledger -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    tenant: str
    key_id: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_Key = tuple[str, str, str, str]  # day, tenant, key id ("" for none), model


def _add_tokens(totals: dict[tuple[str, str], int], tenant: str, day: str, tokens: int) -> None:
    """Add ``tokens`` to ``tenant``'s sums for ``day`` and for its month."""
    for period in (day, day[:7]):
        totals[(tenant, period)] = totals.get((tenant, period), 0) + tokens


def _add_rows(into: dict[Any, list[int]], rows: dict[Any, list[int]]) -> None:
    """Add ``rows``' counts (requests, prompt tokens, completion tokens) into ``into``, key by key."""
    for key, counts in rows.items():
        row = into.setdefault(key, [0, 0, 0])
        for i, n in enumerate(counts):
            row[i] += n


class UsageLedger:
    """Usage per UTC day, tenant, key and model: summed in memory, written to SQLite in batches.

    ``path`` ``None`` keeps it in memory only (a library user, a test). Charges never touch the disk;
    ``flush`` (every ``flush_interval_s`` once started, at close, and before a report) writes what
    was charged since the last one in a single transaction.
    """

    def __init__(self, path: Path | None, *, flush_interval_s: float = 5.0, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path is not None else None
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._lock = threading.Lock()  # the in-memory sums (held for microseconds)
        self._db_lock = threading.Lock()  # the file (held while writing or reading it)
        self._flush_lock = threading.Lock()  # one flush at a time: its re-read sums include every write
        self._conn: sqlite3.Connection | None = None
        self._pending: dict[_Key, list[int]] = {}  # charged, not yet written: [requests, prompt, completion]
        self._memory: dict[_Key, list[int]] = {}  # everything, for a ledger without a file
        self._totals: dict[tuple[str, str], int] = {}  # (tenant, day or month) -> tokens
        self._seeded = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_home(cls, home: Path, *, flush_interval_s: float = 5.0) -> UsageLedger:
        return cls(Path(home) / "usage.db", flush_interval_s=flush_interval_s)

    # --- the request path: charge and read the sums ------------------------------------------------

    def charge(self, tenant: str, key_id: str | None, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one model call and its tokens."""
        now = self.clock()
        day = utc_day(now)
        tokens = prompt_tokens + completion_tokens
        key = (day, tenant, key_id or "", model)
        self._seed()
        with self._lock:
            row = self._pending.get(key)
            if row is None:
                row = self._pending[key] = [0, 0, 0]
            row[0] += 1
            row[1] += prompt_tokens
            row[2] += completion_tokens
            if tokens:
                _add_tokens(self._totals, tenant, day, tokens)

    def used(self, tenant: str, period: str) -> int:
        """Tokens ``tenant`` used in ``period``: a UTC day (``2025-06-01``) or month (``2025-06``)."""
        self._seed()
        return self._totals.get((tenant, period), 0)

    def current_totals(self) -> dict[tuple[str, str], int]:
        """Tokens per (tenant, today / this month), for the metrics."""
        day = utc_day(self.clock())
        self._seed()
        with self._lock:
            return {k: v for k, v in self._totals.items() if k[1] in (day, day[:7])}

    # --- the file ----------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        assert self.path is not None
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _seed(self) -> None:
        """The sums for this month, from the file (once; then after each flush)."""
        if self._seeded:
            return
        self._seeded = True
        if self.path is not None and self.path.exists():
            self._reload_totals()

    def _reload_totals(self) -> None:
        """Sums for today and this month: the file's (every process that shares it) plus what this one
        charged since its last write."""
        assert self.path is not None
        month = utc_day(self.clock())[:7]
        with self._db_lock:
            rows = (
                self._db()
                .execute(
                    "SELECT tenant, day, SUM(prompt_tokens + completion_tokens) FROM usage WHERE day >= ?"
                    " GROUP BY tenant, day",
                    (f"{month}-01",),
                )
                .fetchall()
            )
        totals: dict[tuple[str, str], int] = {}
        for tenant, day, tokens in rows:
            _add_tokens(totals, tenant, day, tokens)
        with self._lock:
            for (day, tenant, _, _), (_, prompt, completion) in self._pending.items():
                _add_tokens(totals, tenant, day, prompt + completion)
            self._totals = totals

    def flush(self) -> None:
        """Write what was charged since the last flush (one transaction), then re-read the sums."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        if self.path is None:
            with self._lock:
                _add_rows(self._memory, pending)
            return
        try:
            with self._db_lock:
                conn = self._db()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO usage (day, tenant, key_id, model, requests, prompt_tokens, completion_tokens)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET"
                        " requests = requests + excluded.requests,"
                        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                        " completion_tokens = completion_tokens + excluded.completion_tokens",
                        [(*key, *row) for key, row in pending.items()],
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            # Kept for the next try, so a busy or full disk delays the record instead of losing it.
            with self._lock:
                _add_rows(self._pending, pending)
            log.warning("usage not written to %s (kept in memory, retried): %s", self.path, exc)
            return
        self._reload_totals()

    def rows(self, month: str, tenant: str | None = None) -> list[UsageRow]:
        """Every row of ``month`` (``2025-06``), of one tenant or all, written or not."""
        self.flush()
        found: list[tuple[Any, ...]]
        if self.path is None:
            with self._lock:
                found = [(*key, *row) for key, row in self._memory.items()]
            found = [r for r in found if r[0].startswith(month) and (tenant is None or r[1] == tenant)]
            found.sort()
        elif not self.path.exists():
            found = []
        else:
            sql = (
                "SELECT day, tenant, key_id, model, requests, prompt_tokens, completion_tokens FROM usage"
                " WHERE day >= ? AND day <= ?"
            )
            args: list[str] = [f"{month}-01", f"{month}-31"]
            if tenant is not None:
                sql += " AND tenant = ?"
                args.append(tenant)
            with self._db_lock:
                found = self._db().execute(sql + " ORDER BY day, tenant, key_id, model", args).fetchall()
        return [UsageRow(d, t, k or None, m, int(r), int(p), int(c)) for d, t, k, m, r, p, c in found]

    # --- lifecycle (a server's) --------------------------------------------------------------------

    async def start(self) -> None:
        if self.path is not None:
            await asyncio.to_thread(self._seed)
        self._task = asyncio.create_task(self._flush_every(), name="usage-ledger")

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await asyncio.to_thread(self.flush)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.flush)
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# --- the gate -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """A model's own limits, shared by every key that calls it; ``None``: unlimited."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    daily_tokens: int | None = None
    monthly_tokens: int | None = None


NO_BUDGET = Budget()
Charge = Callable[[Usage], None]
REFUSAL_REASONS = ("key_rpm", "key_tpm", "model_rpm", "model_tpm", "daily_budget", "monthly_budget")


class LimitGate:
    """Admits each model call under the caller's and the model's limits and its tenant's budgets, and
    charges what the call used. One per server; ``budgets(tenant)`` is read at most once per
    ``budget_cache_s`` per tenant, so a changed budget applies within that time. Keys in
    ``unmetered_keys`` (the configuration's admin keys) have no budget; their usage is still recorded."""

    def __init__(
        self,
        ledger: UsageLedger,
        *,
        model_limits: Mapping[str, ModelLimits] | Callable[[str], ModelLimits | None] | None = None,
        budgets: Callable[[str], Budget] | None = None,
        budget_cache_s: float = 2.0,
        unmetered_keys: frozenset[str] = frozenset(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        # A model's own limits, by name: a mapping, or a lookup (models defined at run time included).
        self.limits_of: Callable[[str], ModelLimits | None] = (
            model_limits if callable(model_limits) else dict(model_limits or {}).get
        )
        self.budgets = budgets
        self.budget_cache_s = budget_cache_s
        self.unmetered_keys = unmetered_keys
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], SlidingWindow] = {}
        self._budget_cache: dict[str, tuple[float, Budget]] = {}
        self.refused: dict[tuple[str, str], int] = {}  # (tenant, reason) -> refusals since start
        self.tokens: dict[tuple[str, str], list[int]] = {}  # (tenant, model) -> [prompt, completion] since start

    # --- lifecycle: the ledger's ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.ledger.start()

    async def close(self) -> None:
        await self.ledger.close()

    # --- checks -------------------------------------------------------------------------------------

    def _window(self, kind: str, name: str) -> SlidingWindow:
        window = self._windows.get((kind, name))
        if window is None:
            window = self._windows[(kind, name)] = SlidingWindow()
        return window

    def _refuse(self, tenant: str, reason: str, error: RateLimitError) -> RateLimitError:
        self.refused[(tenant, reason)] = self.refused.get((tenant, reason), 0) + 1
        return error

    def _limits(self, model: str) -> ModelLimits | None:
        found = self.limits_of(model)
        return found if found is not None and (found.rpm or found.tpm) else None

    def budget(self, tenant: str) -> Budget:
        if self.budgets is None:
            return NO_BUDGET
        now = self.monotonic()
        cached = self._budget_cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self.budgets(tenant)
        self._budget_cache[tenant] = (now + self.budget_cache_s, found)
        return found

    def _take(self, tenant: str, kind: str, name: str, limit: int, now: float, says: Callable[[float], str]) -> None:
        """429 (counted as a ``kind`` refusal) unless the ``kind`` window of ``name`` has room under
        ``limit``; ``says(wait)`` is the message. The caller holds the lock and adds what it uses."""
        wait = self._window(kind, name).wait_s(limit, now)
        if wait > 0:
            raise self._refuse(tenant, kind, RateLimitError(says(wait), retry_after=wait))

    def admit_request(self, principal: Principal) -> None:
        """Count one model-calling HTTP request against its key's requests per minute (429 over it)."""
        key, rpm = principal.key_id, principal.rpm
        if rpm is None or key is None:
            return
        with self._lock:
            now = self.monotonic()
            self._take(
                principal.tenant,
                "key_rpm",
                key,
                rpm,
                now,
                lambda wait: (
                    f"Rate limit reached for API key {key}: {rpm} requests per minute. "
                    f"Try again in {_in(wait)}, or ask an admin for a key with a higher limit."
                ),
            )
            self._window("key_rpm", key).add(1, now)

    def admit(self, model: str, kind: str) -> Charge:
        """Check a call to ``model`` before it is made (403 outside the key's models, 429 over a limit
        or budget); the answer charges the call's usage when it ends."""
        principal = current_principal()
        if not in_internal_call():
            require_scope("models", model)
        limits = self._limits(model)
        metered = principal.key_id is not None and principal.key_id not in self.unmetered_keys
        budget = self.budget(principal.tenant) if metered else NO_BUDGET
        if principal.tpm is not None or limits is not None:
            self._check_rates(principal, model, limits)
        if budget is not NO_BUDGET:
            self._check_budget(principal.tenant, budget)
        return self._charger(principal, model)

    def _check_rates(self, principal: Principal, model: str, limits: ModelLimits | None) -> None:
        tenant, key, tpm = principal.tenant, principal.key_id, principal.tpm
        with self._lock:
            now = self.monotonic()
            if tpm is not None and key is not None:
                self._take(
                    tenant,
                    "key_tpm",
                    key,
                    tpm,
                    now,
                    lambda wait: (
                        f"Rate limit reached for API key {key}: {tpm} tokens per minute "
                        f"({self._window('key_tpm', key).used(now)} used in the last minute). Try again in {_in(wait)}."
                    ),
                )
            if limits is None:
                return
            model_tpm, model_rpm = limits.tpm, limits.rpm
            if model_tpm is not None:
                self._take(
                    tenant,
                    "model_tpm",
                    model,
                    model_tpm,
                    now,
                    lambda wait: (
                        f"Rate limit reached for model {model!r}: {model_tpm} tokens per minute, shared by "
                        f"all keys ({self._window('model_tpm', model).used(now)} used in the last minute). "
                        f"Try again in {_in(wait)}."
                    ),
                )
            if model_rpm is not None:
                self._take(
                    tenant,
                    "model_rpm",
                    model,
                    model_rpm,
                    now,
                    lambda wait: (
                        f"Rate limit reached for model {model!r}: {model_rpm} requests per minute, shared "
                        f"by all keys. Try again in {_in(wait)}."
                    ),
                )
                self._window("model_rpm", model).add(1, now)  # last: a call refused by another limit is not counted

    def _check_budget(self, tenant: str, budget: Budget) -> None:
        now = self.ledger.clock()
        day = utc_day(now)
        for reason, limit, period, what, wait in (
            ("daily_budget", budget.daily_tokens, day, "daily", until_next_day),
            ("monthly_budget", budget.monthly_tokens, day[:7], "monthly", until_next_month),
        ):
            if limit is None:
                continue
            used = self.ledger.used(tenant, period)
            if used >= limit:
                seconds = wait(now)
                resets = "00:00 UTC" if what == "daily" else "the 1st of next month, 00:00 UTC"
                raise self._refuse(
                    tenant,
                    reason,
                    QuotaExceededError(
                        f"The tenant {tenant!r} has used {used} of its {what} budget of {limit} tokens. "
                        f"It resets at {resets} (in {_in(seconds)}); an admin can raise it with "
                        f"'datapilot keys budget {tenant}'.",
                        retry_after=seconds,
                    ),
                )

    def _charger(self, principal: Principal, model: str) -> Charge:
        done = False

        def charge(usage: Usage) -> None:
            nonlocal done
            if done:  # once per call, however its end is reported
                return
            done = True
            self.charge(principal, model, usage)

        return charge

    def charge(self, principal: Principal, model: str, usage: Usage) -> None:
        """Record what one call to ``model`` used (the ledger, the minute windows, the metrics)."""
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        tokens = prompt + completion
        limits = self._limits(model)
        with self._lock:
            if tokens:
                now = self.monotonic()
                if principal.tpm is not None and principal.key_id is not None:
                    self._window("key_tpm", principal.key_id).add(tokens, now)
                if limits is not None and limits.tpm is not None:
                    self._window("model_tpm", model).add(tokens, now)
            counted = self.tokens.get((principal.tenant, model))
            if counted is None:
                counted = self.tokens[(principal.tenant, model)] = [0, 0]
            counted[0] += prompt
            counted[1] += completion
        self.ledger.charge(principal.tenant, principal.key_id, model, prompt, completion)

    # --- figures ------------------------------------------------------------------------------------

    def token_counts(self) -> Iterator[tuple[str, str, int, int]]:
        """(tenant, model, prompt tokens, completion tokens) charged since start."""
        with self._lock:
            items = [(t, m, p, c) for (t, m), (p, c) in self.tokens.items()]
        yield from items

    def refusal_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.refused)


__all__ = [
    "Budget",
    "Charge",
    "LimitGate",
    "ModelLimits",
    "QuotaExceededError",
    "SlidingWindow",
    "UsageLedger",
    "UsageRow",
    "until_next_day",
    "until_next_month",
    "utc_day",
]
