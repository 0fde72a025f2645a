"""Knowledge spaces, ingestion and retrieval (issue #7).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
