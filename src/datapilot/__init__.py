"""DataPilot: talk to your own data with private LLMs.

Layers (see DESIGN.md): ``core`` (shared types, config), ``awel`` (workflows), the modules
(``models``, ``cache``, ``rag``, ``datasource``, ``text2sql``, ``agents``), ``train``, and on top
``server``, ``apps`` and ``web``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
