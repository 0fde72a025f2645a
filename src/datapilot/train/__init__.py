"""Text-to-SQL training and evaluation hub.

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
