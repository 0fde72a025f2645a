"""Per-request serving measurements: one log line per request, Prometheus series at /metrics, and
``GET /api/metrics/models``: recent figures per model as JSON (the UI's models page reads them).

With limits on (``attach_limits``), /metrics also shows tokens per tenant and model
(``datapilot_tokens_total{tenant,model,kind}``), refusals (``datapilot_rate_limited_total{tenant,reason}``)
and each tenant's tokens used today and this month (``datapilot_tenant_tokens_used{tenant,period}``),
read from the limits' own counters when scraped: nothing added to the request path."""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from datapilot.core.limits import LimitGate, utc_day
from datapilot.models.manager import RequestRecord
from datapilot.server.deps import require_api_key, services

log = logging.getLogger("datapilot.serving")

RECENT_REQUESTS = 100  # per model, for the JSON figures


@dataclass(slots=True)
class _Recent:
    at: float
    status: str
    latency_s: float
    ttft_s: float | None
    tokens_per_s: float
    completion_tokens: int


def _median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 2) if values else None


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class LimitsCollector(Collector):
    """Usage and refusals per tenant, from the limit gate's counters at scrape time."""

    def __init__(self, gate: LimitGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "datapilot_tokens",
            "Model tokens charged to tenants (prompt, completion)",
            labels=("tenant", "model", "kind"),
        )
        for tenant, model, prompt, completion in self.gate.token_counts():
            tokens.add_metric((tenant, model, "prompt"), prompt)
            tokens.add_metric((tenant, model, "completion"), completion)
        refused = CounterMetricFamily(
            "datapilot_rate_limited",
            "Requests refused by a rate limit or a token budget (key_rpm, key_tpm, model_rpm, model_tpm, "
            "daily_budget, monthly_budget)",
            labels=("tenant", "reason"),
        )
        for (tenant, reason), count in sorted(self.gate.refusal_counts().items()):
            refused.add_metric((tenant, reason), count)
        used = GaugeMetricFamily(
            "datapilot_tenant_tokens_used",
            "Tokens a tenant used today and this month (UTC), what its budgets are checked against",
            labels=("tenant", "period"),
        )
        today = utc_day(self.gate.ledger.clock())
        for (tenant, period), value in sorted(self.gate.ledger.current_totals().items()):
            used.add_metric((tenant, "day" if period == today else "month"), value)
        yield from (tokens, refused, used)


class ServingMetrics:
    """Own registry per app, so several servers (and tests) in one process never share series."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds: read by `bench serve`
        labels = ("model", "kind", "status")
        self.requests = Counter("datapilot_requests", "Model requests by outcome", labels, registry=r)
        self.latency = Histogram(
            "datapilot_request_latency_seconds",
            "Total request latency",
            ("model", "kind"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "datapilot_first_token_latency_seconds",
            "Time to the first generated token",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "datapilot_decode_tokens_per_second",
            "Decode throughput per request",
            ("model",),
            buckets=(1, 5, 10, 20, 40, 60, 80, 120, 200, 400, 1000),
            registry=r,
        )
        self.prompt_tokens = Counter("datapilot_prompt_tokens", "Prompt tokens", ("model",), registry=r)
        self.completion_tokens = Counter("datapilot_completion_tokens", "Generated tokens", ("model",), registry=r)
        self.model_ready = Gauge("datapilot_model_ready", "1 when the model is loaded", ("model",), registry=r)
        self.batching = Gauge(
            "datapilot_batching",
            "Batched models: running and waiting sequences, KV cells used, prefix hit rate",
            ("model", "figure"),
            registry=r,
        )
        self.totals: dict[str, dict[str, int]] = {}
        self.recent: dict[str, deque[_Recent]] = {}

    def attach_limits(self, gate: LimitGate) -> None:
        """Show the limits' usage and refusals at /metrics."""
        self.registry.register(LimitsCollector(gate))

    def observe(self, rec: RequestRecord) -> None:
        t = rec.timing
        self.requests.labels(rec.model, rec.kind, rec.status).inc()
        self.latency.labels(rec.model, rec.kind).observe(t.latency_s)
        self.prompt_tokens.labels(rec.model).inc(rec.usage.prompt_tokens)
        self.completion_tokens.labels(rec.model).inc(rec.usage.completion_tokens)
        ttft = t.ttft_s
        tps = t.tokens_per_second(rec.usage.completion_tokens)
        if ttft is not None:
            self.ttft.labels(rec.model).observe(ttft)
        if tps:
            self.tokens_per_second.labels(rec.model).observe(tps)
        totals = self.totals.setdefault(rec.model, {"requests": 0, "errors": 0, "completion_tokens": 0})
        totals["requests"] += 1
        totals["errors"] += rec.status not in ("ok", "cancelled")
        totals["completion_tokens"] += rec.usage.completion_tokens
        window = self.recent.setdefault(rec.model, deque(maxlen=RECENT_REQUESTS))
        window.append(_Recent(time.time(), rec.status, t.latency_s, ttft, tps or 0.0, rec.usage.completion_tokens))
        log.info(
            "model=%s kind=%s stream=%s status=%s prompt_tokens=%d completion_tokens=%d "
            "ttft_ms=%s latency_ms=%.1f tokens_per_s=%.1f",
            rec.model,
            rec.kind,
            int(rec.stream),
            rec.status,
            rec.usage.prompt_tokens,
            rec.usage.completion_tokens,
            f"{ttft * 1000:.1f}" if ttft is not None else "-",
            t.latency_s * 1000,
            tps,
        )

    def render(self, ready: dict[str, bool], batching: dict[str, dict[str, Any]] | None = None) -> bytes:
        for model, ok in ready.items():
            self.model_ready.labels(model).set(1 if ok else 0)
        for model, stats in (batching or {}).items():
            for key in ("running", "waiting", "kv_used", "prefix_hit_rate"):
                self.batching.labels(model, key).set(float(stats[key]))
        return generate_latest(self.registry)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per model: totals since start, and medians over its last ``RECENT_REQUESTS`` requests."""
        out: dict[str, dict[str, Any]] = {}
        for model, window in self.recent.items():
            recent = list(window)
            generating = [r for r in recent if r.completion_tokens > 0]
            tps = [r.tokens_per_s for r in generating if r.tokens_per_s > 0]
            out[model] = {
                **self.totals.get(model, {}),
                "recent": len(recent),
                "first_token_p50_ms": _median_ms([r.ttft_s for r in generating if r.ttft_s is not None]),
                "latency_p50_ms": _median_ms([r.latency_s for r in recent]),
                "tokens_per_s": round(statistics.median(tps), 1) if tps else None,
                "last_request_at": recent[-1].at if recent else None,
            }
        return out


def build_metrics_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)])

    @router.get("/metrics/models")
    async def model_figures(request: Request) -> dict[str, Any]:
        svc = services(request)
        data = svc.metrics.summary()
        batching = getattr(svc.llm, "batch_stats", None)
        for model, stats in (batching() if callable(batching) else {}).items():
            data.setdefault(model, {})["batching"] = stats  # running / waiting sequences, KV, prefix reuse
        return {"data": data}

    return router
