"""Serve the UI: ``/`` answers the page, ``/static/...`` its scripts, styles and vendored libraries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from datapilot import __version__

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"

# What the page loads from static/vendor, in order (vega-lite and vega-embed need vega first).
VENDOR_FILES: dict[str, tuple[str, ...]] = {
    "markdown": ("marked.js", "purify.js"),
    "highlight": ("highlight.js", "highlight-light.css", "highlight-dark.css"),
    "charts": ("vega.js", "vega-lite.js", "vega-embed.js"),
}
_PLACEHOLDER = "<!--DATAPILOT:HEAD-->"


def vendor_status(vendor_dir: Path = VENDOR_DIR) -> dict[str, bool]:
    """Which vendored feature sets are fully present (all of their files exist)."""
    return {feature: all((vendor_dir / f).is_file() for f in files) for feature, files in VENDOR_FILES.items()}


def _tag(name: str, version: str) -> str:
    url = f"/static/vendor/{name}?v={version}"
    if name == "highlight-light.css":
        return f'<link rel="stylesheet" href="{url}" media="(prefers-color-scheme: light)">'
    if name == "highlight-dark.css":
        return f'<link rel="stylesheet" href="{url}" media="(prefers-color-scheme: dark)">'
    return f'<script src="{url}" defer></script>'


def render_index(static_dir: Path = STATIC_DIR) -> str:
    """The page, with tags only for the vendored libraries that are installed (no 404s in the console)."""
    vendor_dir = static_dir / "vendor"
    status = vendor_status(vendor_dir)
    tags = [_tag(f, __version__) for feature, files in VENDOR_FILES.items() if status[feature] for f in files]
    boot: dict[str, Any] = {"version": __version__, "vendor": status}
    config = json.dumps(boot, separators=(",", ":")).replace("<", "\\u003c")
    head = "\n    ".join([*tags, f'<script id="datapilot-config" type="application/json">{config}</script>'])
    html = (static_dir / "index.html").read_text(encoding="utf-8")
    return html.replace(_PLACEHOLDER, head).replace("{{version}}", __version__)


def mount_ui(app: FastAPI, static_dir: Path = STATIC_DIR) -> None:
    """Add ``/`` (the page) and ``/static`` (its files) to ``app``; routes added before keep priority."""
    page = render_index(static_dir)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    @app.get("/ui", include_in_schema=False)
    async def ui() -> RedirectResponse:
        return RedirectResponse("/")

    app.mount("/static", StaticFiles(directory=static_dir), name="static")
