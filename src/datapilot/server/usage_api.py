"""``GET /api/usage``: tokens and requests per tenant, by day and month, per key and per model, with the
tenant's budgets and what is left of them.

A tenant's key sees its own tenant (naming another is a 403); an admin key sees every tenant that
used a model or has a budget, or the one it names with ``?tenant=``. ``?month=YYYY-MM`` reads a past
month (default: this one, UTC). Recorded usage is written out first, so the answer includes the calls
that ended just before it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Request

from datapilot.core.errors import InvalidRequestError, PermissionDeniedError
from datapilot.core.keys import TenantBudget
from datapilot.core.limits import LimitGate, UsageRow, utc_day
from datapilot.core.tenancy import current_principal
from datapilot.server.deps import UnavailableError, key_store, require_api_key

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _gate(request: Request) -> LimitGate:
    gate: LimitGate | None = getattr(request.app.state, "limits", None)
    if gate is None:
        raise UnavailableError("usage is not recorded on this server ([limits] enabled = false)")
    return gate


def _sum(rows: Iterable[UsageRow]) -> dict[str, int]:
    requests = prompt = completion = 0
    for r in rows:
        requests += r.requests
        prompt += r.prompt_tokens
        completion += r.completion_tokens
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _period(rows: list[UsageRow], budget: int | None) -> dict[str, Any]:
    totals: dict[str, Any] = _sum(rows)
    totals["budget_tokens"] = budget
    totals["remaining_tokens"] = None if budget is None else max(0, budget - totals["total_tokens"])
    return totals


def _grouped(rows: list[UsageRow], today: str | None, field: str) -> list[dict[str, Any]]:
    names = sorted({getattr(r, field) or "" for r in rows})
    out = []
    for name in names:
        mine = [r for r in rows if (getattr(r, field) or "") == name]
        out.append(
            {
                field: name or None,
                "today": _sum(r for r in mine if r.day == today) if today is not None else None,
                "month": _sum(mine),
            }
        )
    return out


def tenant_report(tenant: str, rows: list[UsageRow], budget: TenantBudget, today: str | None) -> dict[str, Any]:
    """One tenant's month: totals for today (``None`` for a past month) and the month with budgets and
    what is left, then per key, per model and per day."""
    days = sorted({r.day for r in rows})
    return {
        "tenant": tenant,
        "budget": {"daily_tokens": budget.daily_tokens, "monthly_tokens": budget.monthly_tokens},
        "today": _period([r for r in rows if r.day == today], budget.daily_tokens) if today is not None else None,
        "month": _period(rows, budget.monthly_tokens),
        "by_key": _grouped(rows, today, "key_id"),
        "by_model": _grouped(rows, today, "model"),
        "days": [{"day": d, **_sum(r for r in rows if r.day == d)} for d in days],
    }


def build_usage_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/usage")
    async def usage(request: Request, tenant: str | None = None, month: str | None = None) -> dict[str, Any]:
        gate = _gate(request)
        principal = current_principal()
        if not principal.is_admin:
            if tenant is not None and tenant != principal.tenant:
                raise PermissionDeniedError(
                    f"this API key belongs to the tenant {principal.tenant!r} and may not read the usage of "
                    f"{tenant!r}; use an admin key",
                    param="tenant",
                )
            tenant = principal.tenant
        today = utc_day(time.time())
        month = month or today[:7]
        if not _MONTH.match(month):
            raise InvalidRequestError(f"invalid month {month!r}: use YYYY-MM, e.g. {today[:7]}", param="month")
        rows = await asyncio.to_thread(gate.ledger.rows, month, tenant)
        store = key_store(request)
        budgets = {b.tenant: b for b in (await asyncio.to_thread(store.budgets) if store is not None else [])}
        if tenant is not None:
            names = [tenant]
        else:
            names = sorted(
                {r.tenant for r in rows}
                | {t for t, b in budgets.items() if b.daily_tokens is not None or b.monthly_tokens is not None}
            )
        day = today if month == today[:7] else None
        return {
            "object": "list",
            "month": month,
            "day": day,
            "data": [
                tenant_report(name, [r for r in rows if r.tenant == name], budgets.get(name, TenantBudget(name)), day)
                for name in names
            ],
        }

    return router
