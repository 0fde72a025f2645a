"""Typed knowledge settings with named defaults (the section itself lives in ``core.config``).

``KnowledgeSettings.from_settings`` reads a ``knowledge`` section from the platform settings when the
settings object has one, so the same object works before and after that section is configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from datapilot.core.config import (
    DEFAULT_CANDIDATES,
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_RRF_K,
    DEFAULT_TOP_K,
    ChunkingConfig,
    KnowledgeSection,
    Settings,
)


class KnowledgeSettings(KnowledgeSection):
    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> KnowledgeSettings:
        section: Any = getattr(settings, "knowledge", None)
        base = section.model_dump() if isinstance(section, BaseModel) else dict(section or {})
        return cls.model_validate({**base, **overrides})

    def database(self, home: Path) -> Path:
        return self.db_path or home / "knowledge" / "knowledge.db"


__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_TOKENS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_RRF_K",
    "DEFAULT_TOP_K",
    "ChunkingConfig",
    "KnowledgeSettings",
]
