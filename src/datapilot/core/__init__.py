"""Shared types, protocols, errors and settings used by every layer."""

from datapilot.core.client import EmbeddingClient, LLMClient, collect
from datapilot.core.config import ModelConfig, ServerSettings, Settings, load_settings
from datapilot.core.errors import (
    AuthenticationError,
    ConfigError,
    ContextLengthExceededError,
    DataPilotError,
    InvalidRequestError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelNotReadyError,
    UpstreamError,
)
from datapilot.core.types import (
    ROLES,
    EmbeddingOutput,
    Message,
    ModelChunk,
    ModelInfo,
    ModelOutput,
    ModelRequest,
    SamplingParams,
    Timing,
    Usage,
)

__all__ = [
    "ROLES",
    "AuthenticationError",
    "ConfigError",
    "ContextLengthExceededError",
    "DataPilotError",
    "EmbeddingClient",
    "EmbeddingOutput",
    "InvalidRequestError",
    "LLMClient",
    "Message",
    "MissingDependencyError",
    "ModelChunk",
    "ModelConfig",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelOutput",
    "ModelRequest",
    "SamplingParams",
    "ServerSettings",
    "Settings",
    "Timing",
    "UpstreamError",
    "Usage",
    "collect",
    "load_settings",
]
