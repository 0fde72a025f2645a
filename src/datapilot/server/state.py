"""The service objects a running server holds, injected into routes from app state."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from datapilot.core.config import Settings
from datapilot.models.manager import ModelManager
from datapilot.server.metrics import ServingMetrics


@dataclass(slots=True)
class Services:
    settings: Settings
    llm: ModelManager
    metrics: ServingMetrics


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
