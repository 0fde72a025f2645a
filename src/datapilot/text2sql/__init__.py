"""The text-to-SQL pipeline and its evaluation (issue #5).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
