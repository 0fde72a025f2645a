"""Benchmarks users run against their own deployments: ``datapilot bench serve`` (and ``cache``)."""
