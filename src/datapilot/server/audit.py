"""The audit log: one JSON line per API request, under ``DATAPILOT_HOME/audit/``.

Who (a fingerprint of the API key, the tenant), what (method, route template, model, data source, the
SQL actually run, knowledge space, what privacy masked or refused: kinds and counts), when, how it ended
(status, duration, error code). Never request bodies, prompts, answers, personal data or secrets.

* ``AuditLog``: append-only writer. The request path only puts a small dict on a queue; a background
  thread formats, appends (the file is opened in append mode, earlier lines are never rewritten) and
  rotates by size (``audit.jsonl`` -> ``audit.1.jsonl`` ... ``audit.<keep>.jsonl``, the oldest dropped).
  ``close()`` flushes what is queued.
* ``AuditMiddleware``: records every request under /v1, /api and /modelcache (not /health, /metrics,
  the UI or the docs); deeper layers add fields with ``datapilot.core.audit.audit_note``.
* ``read_records``: newest first across the rotated files, filtered (``GET /api/audit``,
  ``datapilot audit show``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datapilot.core.audit import audit_begin, audit_end
from datapilot.core.config import AuditSettings
from datapilot.core.errors import InvalidRequestError
from datapilot.server.deps import CONFIG_KEY_ID, UnavailableError, access, require_api_key

log = logging.getLogger("datapilot.audit")

FILE_NAME = "audit.jsonl"
AUDITED_PREFIXES = ("/v1/", "/api/", "/modelcache")
TENANT_HEADERS = (b"x-tenant", b"x-datapilot-cache-tenant")
_ERROR_SNIFF_BYTES = 8192
BATCH_WAIT_S = 0.05  # records reach the file at most this much later (flush() and close() wait for them)
_STOP = object()


def audit_folder(home: Path) -> Path:
    return home / "audit"


def key_fingerprint(key: str) -> str:
    """What the log shows of an API key: the first 8 hex characters of its SHA-256, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def log_files(folder: Path, keep: int | None = None) -> list[Path]:
    """The audit files, newest first: ``audit.jsonl``, ``audit.1.jsonl``, ``audit.2.jsonl`` ..."""
    rotated = []
    for path in folder.glob("audit.*.jsonl"):
        middle = path.name[len("audit.") : -len(".jsonl")]
        if middle.isdigit() and (keep is None or int(middle) <= keep):
            rotated.append((int(middle), path))
    current = folder / FILE_NAME
    return ([current] if current.exists() else []) + [p for _, p in sorted(rotated)]


class AuditLog:
    """Append-only, size-rotated JSON-lines audit log, written by a background thread."""

    def __init__(self, folder: Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 5) -> None:
        self.folder, self.max_bytes, self.keep = folder, max_bytes, keep
        self.path = folder / FILE_NAME
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._file: Any = None
        self._size = 0

    @classmethod
    def from_settings(cls, settings: AuditSettings, home: Path) -> AuditLog:
        return cls(audit_folder(home), settings.max_bytes, settings.keep)

    # --- the request path: a put on a queue -------------------------------------------------------------

    def record(self, record: dict[str, Any]) -> None:
        """Queue ``record`` (``ts``: seconds since the epoch, formatted by the writer)."""
        if self._thread is None:
            self._start_thread()
        self._queue.put(record)

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="datapilot-audit", daemon=True)
                self._thread.start()

    # --- the writer thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            if items[0] is not _STOP:
                time.sleep(BATCH_WAIT_S)  # let a burst gather: one write, fewer wake-ups taking the GIL
            while True:  # everything already queued goes out in one write
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = [i for i in items if i is not _STOP]
            stop = len(batch) != len(items)
            try:
                if batch:
                    self._write(batch)
            except Exception:  # the log must never take the server down; it says so instead
                log.exception("could not write the audit log at %s", self.path)
            finally:
                for _ in items:
                    self._queue.task_done()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for record in batch:
            line = (json.dumps(_formatted(record), ensure_ascii=False, default=str) + "\n").encode()
            if self._file is None:
                self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._size += len(line)
        if self._file is not None:
            self._file.flush()

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # held open between writes
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        oldest = self.folder / f"audit.{self.keep}.jsonl"
        if oldest.exists():
            oldest.unlink()
        for i in range(self.keep - 1, 0, -1):
            src = self.folder / f"audit.{i}.jsonl"
            if src.exists():
                os.replace(src, self.folder / f"audit.{i + 1}.jsonl")
        if self.keep > 0:
            os.replace(self.path, self.folder / "audit.1.jsonl")
        else:
            self.path.unlink()
        self._open()

    # --- lifecycle ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every queued record is on disk."""
        if self._thread is not None:
            self._queue.join()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=10)
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, **filters: Any) -> list[dict[str, Any]]:
        self.flush()
        return read_records(self.folder, **filters)


def _formatted(record: dict[str, Any]) -> dict[str, Any]:
    ts = record.get("ts")
    if isinstance(ts, float):
        record["ts"] = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return record


# --- reading -----------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str | None, param: str = "since") -> datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise), or a span back from now: ``30m``, ``2h``, ``7d``."""
    if not value:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"{param}={value!r} is neither an ISO 8601 time nor a span like 30m, 2h, 7d", param=param
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _lines_newest_first(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:  # rotated away while reading
        return
    yield from reversed(lines)


def read_records(
    folder: Path,
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    route: str | None = None,
    model: str | None = None,
    key: str | None = None,
    status: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Records newest first across the rotated files: ``route`` matches the template or its start,
    ``key`` the fingerprint, ``status`` exactly; ``since``/``until`` as ``parse_time`` reads them."""
    lo = parse_time(since, "since") if isinstance(since, str) else since
    hi = parse_time(until, "until") if isinstance(until, str) else until
    out: list[dict[str, Any]] = []
    for path in log_files(folder):
        for line in _lines_newest_first(path):
            try:
                rec = json.loads(line)
                ts = datetime.fromisoformat(str(rec["ts"]).replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash: skipped
            if hi is not None and ts > hi:
                continue
            if lo is not None and ts < lo:
                return out  # newest first: everything after this is older
            if route is not None and not str(rec.get("route") or "").startswith(route):
                continue
            if model is not None and rec.get("model") != model:
                continue
            if key is not None and rec.get("key") != key:
                continue
            if status is not None and rec.get("status") != status:
                continue
            out.append(rec)
            if len(out) >= limit:
                return out
    return out


# --- the middleware ----------------------------------------------------------------------------------


class AuditMiddleware:
    """Record every API request: who, what, when, how it ended; deeper layers add fields with
    ``audit_note``. Costs the request a dict and a queue put; the writing happens on another thread."""

    def __init__(self, app: ASGIApp, audit: AuditLog, keys: Callable[[], Sequence[SecretStr]] = lambda: ()) -> None:
        self.app, self.audit = app, audit
        self.keys = keys  # the server's API keys, read per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(AUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ts = time.time()
        fields, token = audit_begin()
        reply: dict[str, Any] = {"status": None, "request_id": None, "error_json": False, "body": b""}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = reply["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        reply["request_id"] = value.decode("latin-1")
                    elif name == b"content-type" and status >= 400 and value.startswith(b"application/json"):
                        reply["error_json"] = True
            elif message["type"] == "http.response.body" and reply["error_json"]:
                if len(reply["body"]) < _ERROR_SNIFF_BYTES:
                    reply["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException:
            if reply["status"] is None:
                reply["status"] = 500
            raise
        finally:
            audit_end(token)
            self._record(scope, fields, reply, ts, started)

    def _record(self, scope: Scope, fields: dict[str, Any], reply: dict[str, Any], ts: float, started: float) -> None:
        headers = dict(scope.get("headers") or ())
        route = scope.get("route")
        record: dict[str, Any] = {
            "ts": ts,
            "request_id": fields.pop("request_id", None) or reply["request_id"] or uuid.uuid4().hex,
            "key": self._key(headers, fields.pop("key_id", None)),
            # A tenant key's own tenant (noted by authentication), else the one the request names.
            "tenant": fields.pop("tenant", None)
            or next((headers[h].decode("latin-1")[:128] for h in TENANT_HEADERS if headers.get(h)), None),
            "method": scope["method"],
            "route": _template(scope["path"], route),
            "status": reply["status"],
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        for name, value in fields.items():  # what deeper layers noted; never over who, when or how it ended
            record.setdefault(name, value)
        if reply["error_json"] and "error" not in record:
            record["error"] = _error_code(reply["body"], reply["status"])
        self.audit.record(record)

    def _key(self, headers: dict[bytes, bytes], key_id: str | None) -> str | None:
        if key_id is not None and key_id != CONFIG_KEY_ID:  # a tenant's key: its public id
            return key_id
        if not self.keys() and key_id is None and b"authorization" not in headers:
            return "anonymous"
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return key_fingerprint(token)


def _template(path: str, route: Any) -> str:
    """The route template of ``path``: the matched route's own path (without the prefixes it was
    included under, in this FastAPI) after the raw path's prefix, e.g. ``/api/datasources/{name}``."""
    tpl = getattr(route, "path", None)
    if tpl is None:
        return _unrouted(path)
    segs = path.split("/")
    if ":path}" not in tpl:  # a fixed number of segments
        return "/".join(segs[: max(1, len(segs) - tpl.count("/"))]) + tpl
    regex = getattr(route, "path_regex", None)
    for i in range(len(segs) - 1, 0, -1):  # the shortest tail the route matches: the rest is the prefix
        if regex is not None and regex.match("/" + "/".join(segs[i:])):
            return "/".join(segs[:i]) + tpl
    return tpl


def _unrouted(path: str) -> str:
    """A path no route matched (a 404): logged as its first two segments, not the raw path (which could
    carry anything)."""
    return "/".join(path.split("/")[:3]) + "/..." if path.count("/") > 2 else path


def _error_code(body: bytes, status: int | None) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(code) if code is not None else None
    if "errorCode" in payload:  # ModelCache's shape
        return str(payload["errorCode"])
    return str(status) if status is not None else None


# --- the admin API -----------------------------------------------------------------------------------


def audit_log(request: Request) -> AuditLog:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit is None:
        raise UnavailableError("the audit log is not enabled on this server")
    return audit


def build_audit_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("", openapi_extra=access("admin"))
    async def query_audit(
        since: str | None = Query(None, description="ISO 8601 time, or a span back from now: 30m, 2h, 7d"),
        until: str | None = Query(None, description="ISO 8601 time, or a span back from now"),
        route: str | None = Query(None, description="the route template, or its start: /v1/chat"),
        model: str | None = None,
        key: str | None = Query(None, description="the key's fingerprint, as records show it"),
        status: int | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        audit: AuditLog = Depends(audit_log),
    ) -> dict[str, Any]:
        records = await asyncio.to_thread(
            audit.read, since=since, until=until, route=route, model=model, key=key, status=status, limit=limit
        )
        return {"object": "list", "data": records}

    return router
