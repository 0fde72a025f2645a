"""Built-in model backends; each module is imported only when a model uses it."""
