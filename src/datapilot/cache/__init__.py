"""The semantic cache for LLM answers, ModelCache-compatible (issue #4).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
