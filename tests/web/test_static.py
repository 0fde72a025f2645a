"""Serving the UI (no browser): the page, its files, the vendored libraries, and the model figures."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from datapilot.core.types import Timing, Usage
from datapilot.models.manager import RequestRecord
from datapilot.server.metrics import ServingMetrics
from datapilot.web import STATIC_DIR, VENDOR_FILES, mount_ui, render_index, vendor_status


def test_the_page_and_every_file_it_references_are_served() -> None:
    app = FastAPI()
    mount_ui(app)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        refs = re.findall(r'(?:src|href)="(/static/[^"?]+)', page.text)
        assert "/static/js/app.js" in refs and "/static/vendor/vega-embed.js" in refs
        for ref in refs:
            assert client.get(ref).status_code == 200, ref
        modules = [p.relative_to(STATIC_DIR).as_posix() for p in (STATIC_DIR / "js").rglob("*.js")]
        for module in modules:
            resp = client.get(f"/static/{module}")
            assert resp.status_code == 200 and "javascript" in resp.headers["content-type"], module
        config = re.search(r'<script id="datapilot-config" type="application/json">(.*?)</script>', page.text)
        assert config and json.loads(config.group(1))["vendor"] == {"markdown": True, "highlight": True, "charts": True}
        # No page asks for anything outside the server.
        assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)


def test_the_vendored_libraries_are_pinned_and_complete() -> None:
    assert all(vendor_status().values()), "run scripts/vendor_web.sh"
    versions = json.loads((STATIC_DIR / "vendor" / "versions.json").read_text())
    pinned = json.loads((STATIC_DIR.parent / "package.json").read_text())["dependencies"]
    assert versions == pinned
    assert sum(len(files) for files in VENDOR_FILES.values()) == 8


def test_a_missing_vendor_folder_leaves_out_its_tags(tmp_path: Path) -> None:
    static = tmp_path / "static"
    shutil.copytree(STATIC_DIR, static, ignore=shutil.ignore_patterns("vendor"))
    html = render_index(static)
    assert "/static/vendor/" not in html and '"charts":false' in html


def test_model_figures_are_medians_over_recent_requests() -> None:
    metrics = ServingMetrics()
    for ttft in (0.1, 0.2, 0.3):
        timing = Timing(started=0.0, first_token_at=ttft, finished_at=ttft + 1.0)
        metrics.observe(RequestRecord("m", "chat", True, "ok", Usage(prompt_tokens=10, completion_tokens=21), timing))
    failed = Timing(started=0.0, first_token_at=None, finished_at=0.5)
    metrics.observe(RequestRecord("m", "chat", False, "server_error", Usage(prompt_tokens=5), failed))
    figures = metrics.summary()["m"]
    assert figures["requests"] == 4 and figures["errors"] == 1 and figures["completion_tokens"] == 63
    assert figures["first_token_p50_ms"] == 200.0
    assert figures["tokens_per_s"] == 20.0
    assert figures["last_request_at"] is not None
