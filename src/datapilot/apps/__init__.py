"""Chat scenes composed from the modules.

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
