"""Data-source connectors behind the Connector seam (issue #5).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
