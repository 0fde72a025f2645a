"""The ``datapilot`` command line."""

from datapilot.cli.main import app, main

__all__ = ["app", "main"]
