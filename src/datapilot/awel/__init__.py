"""AWEL, the workflow language: DAGs of operators, triggers, the fluent frame and the text DSL (issue #3).

This layer is planned; see DESIGN.md for where it sits. Nothing here is implemented yet."""
