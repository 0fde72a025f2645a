"""The current request's audit fields: what deeper layers add to the audit log's record of a request.

The server's audit middleware (``datapilot.server.audit``) opens a record for each API request with
``audit_begin`` and writes it when the answer is done; code below it, in any layer, adds what only it
knows with ``audit_note`` (the model chosen, the data source, the knowledge space) and ``audit_append``
(each SQL statement run, each privacy report). Outside a request (the CLI, a library user) both do
nothing. Callers pass identifiers, SQL and counts only: never prompts, answers, values or secrets.

Standard library only: every layer may import it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

_current: ContextVar[dict[str, Any] | None] = ContextVar("datapilot_audit", default=None)


def audit_begin() -> tuple[dict[str, Any], Token[dict[str, Any] | None]]:
    """Open the fields of a new record for the current context; ``audit_end(token)`` closes it.

    The dict itself is shared with the tasks and threads the request starts (they copy the context,
    not the dict), so what they note lands in this record."""
    fields: dict[str, Any] = {}
    return fields, _current.set(fields)


def audit_end(token: Token[dict[str, Any] | None]) -> None:
    _current.reset(token)


def audit_fields() -> dict[str, Any] | None:
    """The current request's fields so far, or ``None`` outside a request."""
    return _current.get()


def audit_note(**fields: Any) -> None:
    """Set fields of the current request's record (a later note of the same field replaces it);
    ``None`` values are left out."""
    current = _current.get()
    if current is not None:
        current.update((k, v) for k, v in fields.items() if v is not None)


def audit_append(field: str, value: Any) -> None:
    """Add ``value`` to the list ``field`` of the current request's record (every SQL statement run,
    every privacy report: a request may have several)."""
    current = _current.get()
    if current is not None:
        items = current.get(field)
        if isinstance(items, list):
            items.append(value)
        else:
            current[field] = [value]


def audit_model(name: str) -> None:
    """A model the current request called: the record's ``model`` is the first one (unless a layer
    noted it already), and ``models`` lists every one when there were several (a scene writing SQL with
    one model and prose with another)."""
    current = _current.get()
    if current is None:
        return
    first = current.setdefault("model", name)
    if name == first and "models" not in current:
        return
    models = current.setdefault("models", [first])
    if isinstance(models, list) and name not in models:
        models.append(name)
