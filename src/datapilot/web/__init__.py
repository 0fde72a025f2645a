"""The single-page UI served at ``/``: chat, data sources, knowledge, models, cache and flows.

Everything the browser loads comes from this package: hand-written ES modules and CSS in
``static/``, and third-party libraries (markdown, sanitiser, code highlighting, Vega charts) copied
into ``static/vendor/`` from pinned npm packages by ``scripts/vendor_web.sh`` at install. Without
the vendor folder the UI still works: plain-text answers, tables instead of charts, and a note.
"""

from datapilot.web._ui import STATIC_DIR, VENDOR_FILES, mount_ui, render_index, vendor_status

__all__ = ["STATIC_DIR", "VENDOR_FILES", "mount_ui", "render_index", "vendor_status"]
