"""The single-page UI served at / (issue #8).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
