"""Errors of the agents layer; each maps to an HTTP status through the core hierarchy."""

from __future__ import annotations

from datapilot.core.errors import ConfigError, InvalidRequestError


class UnknownToolError(InvalidRequestError):
    """A tool name that is not in the registry (or not allowed): refused, never imported."""

    default_code = "unknown_tool"


class UnknownAgentError(InvalidRequestError):
    default_code = "unknown_agent"


class PluginError(ConfigError):
    """A plugin could not be loaded or registered."""

    default_code = "plugin_error"


class ActionParseError(ValueError):
    """A model reply from which no action could be read, even after repair."""
