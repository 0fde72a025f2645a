"""The service objects a running server holds, injected into routes from app state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from datapilot.awel import DAGManager
from datapilot.core.config import Settings
from datapilot.models.service import ModelService
from datapilot.server.metrics import ServingMetrics

if TYPE_CHECKING:
    from datapilot.server.cache_api import CacheService
    from datapilot.server.datasource_api import DataService
    from datapilot.server.knowledge_api import KnowledgeService


@dataclass(slots=True)
class Services:
    settings: Settings
    llm: ModelService
    metrics: ServingMetrics
    awel: DAGManager | None = None
    cache: CacheService | None = None
    data: DataService | None = None
    knowledge: KnowledgeService | None = None


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
