"""The HTTP service: the OpenAI-compatible API and, in later layers, apps, cache and UI."""

from datapilot.server.app import create_app

__all__ = ["create_app"]
