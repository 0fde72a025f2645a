"""Agents that plan and use tools over resources (issue #9).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
