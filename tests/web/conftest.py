"""Browser fixtures: Debian's Chromium driven headless by Playwright (never Playwright's own download).

``ui_server``: a small DataPilot with scripted models only (starts in seconds): ``echo`` behind the
semantic cache (hash embedder), ``typist`` (streams slowly), ``sqlbot`` (answers the data scene with
a fixed SQL, then a sentence), ``agentbot`` (the same, for agent runs) and ``broken``. The real
path (Gemma, MiniLM) runs on the session ``server``.

Screenshots go to ``test-output/web/`` at the repository root (or ``$DATAPILOT_TEST_OUTPUT/web``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from datapilot.testing import ServerProcess, start_server, write_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("DATAPILOT_TEST_OUTPUT", ROOT / "test-output")) / "web"

DATA_SQL = "SELECT segment, COUNT(*) AS customers FROM customers GROUP BY segment ORDER BY customers DESC"
DATA_ANSWER = "Online has the most customers."


def ui_models() -> list[dict[str, object]]:
    return [
        {"name": "echo", "backend": "scripted", "params": {"token_delay_s": 0.01}},
        {
            "name": "typist",
            "backend": "scripted",
            "params": {
                "replies": ["Streaming **works**: " + " ".join(f"word{i}" for i in range(60))],
                "token_delay_s": 0.06,
            },
        },
        {"name": "sqlbot", "backend": "scripted", "params": {"replies": [f"```sql\n{DATA_SQL}\n```", DATA_ANSWER]}},
        # The agent scene's own model: its runs take a varying number of replies, so not sqlbot's.
        {"name": "agentbot", "backend": "scripted", "params": {"replies": [f"```sql\n{DATA_SQL}\n```", DATA_ANSWER]}},
        {"name": "broken", "backend": "scripted", "params": {"fail_load": "weights file is corrupt (test)"}},
    ]


def ui_tables(flows_dir: Path | None = None) -> dict[str, dict[str, object]]:
    hashed = {"kind": "hash"}
    tables: dict[str, dict[str, object]] = {
        "cache": {"enabled": True, "models": ["echo"], "max_temperature": 1.0, "embedders": {"default": hashed}},
        "knowledge": {"embedder": hashed},
        "data": {"model": "sqlbot"},
    }
    if flows_dir is not None:
        tables["awel"] = {"flows_dir": str(flows_dir)}
    return tables


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("ui-server")
    config = write_config(tmp / "datapilot.toml", ui_models(), **ui_tables())
    srv = start_server(tmp, config, tmp / "home", "ui")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install it with `scripts/install.sh --dev` (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run `scripts/install.sh --dev`")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Watched:
    """A page plus what went wrong in it: console errors, uncaught exceptions, off-server requests."""

    page: Any
    base: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    def goto(self, route: str) -> None:
        self.page.goto(f"{self.base}/#/{route}")

    def shot(self, name: str, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_clean(self, allow: str | None = None) -> None:
        errors = [e for e in self.errors if not (allow and re.search(allow, e))]
        assert not errors, f"console errors: {errors}"
        assert not self.external, f"requests left the server: {self.external}"


PageFactory = Callable[..., Watched]


@pytest.fixture
def open_page(browser: Any, output_dir: Path, request: pytest.FixtureRequest) -> Iterator[PageFactory]:
    """``open_page(server, width=1280, height=800)``: a fresh browser context watching for errors."""
    contexts: list[Any] = []

    def make(srv: ServerProcess, width: int = 1280, height: int = 800, **kw: Any) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height}, **kw)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(45_000)  # generous: the test machine is shared and often busy
        watched = Watched(page, srv.url, output_dir)

        def on_console(msg: Any) -> None:
            if msg.type == "error":
                watched.errors.append(msg.text)

        def guard(route: Any) -> None:
            if route.request.url.startswith(srv.url) or route.request.url.startswith("data:"):
                route.continue_()
            else:
                watched.external.append(route.request.url)
                route.abort()

        page.on("console", on_console)
        page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))
        page.route("**/*", guard)
        return watched

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def sample_document(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    doc = folder / "datapilot-handbook.md"
    doc.write_text(
        "# DataPilot handbook\n\n## Cache\n\nThe semantic cache answers repeated questions without calling a model.\n\n"
        "## Data\n\nText-to-SQL turns a question into a read-only query over the sample database.\n\n"
        + "\n\n".join(f"## Section {i}\n\nParagraph {i} about private LLMs and knowledge spaces." for i in range(12))
    )
    return doc
