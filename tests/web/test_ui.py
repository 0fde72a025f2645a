"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright's sync API.

Every test saves screenshots under ``test-output/web/`` (see conftest) and fails on console errors,
uncaught exceptions, or any request that leaves the DataPilot server (the UI must work offline).
Scripted models on ``ui_server`` make answers deterministic; the session ``server`` runs the real
path (Gemma 3 270M, MiniLM).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from datapilot.testing import ServerProcess
from datapilot.web import STATIC_DIR, render_index
from tests.web.conftest import DATA_ANSWER, PageFactory, Watched

# Chromium logs each non-2xx fetch as a console error; tests that provoke API errors allow those.
HTTP_ERROR_LOG = r"Failed to load resource: the server responded with a status of \d+"

ANSWER_DONE = "[data-testid=assistant-message][aria-busy=false]"


def wait_answers(w: Watched, count: int, timeout: float = 60_000) -> None:
    w.page.wait_for_selector(f"{ANSWER_DONE} >> nth={count - 1}", timeout=timeout)


def send(w: Watched, text: str) -> None:
    w.page.fill("[data-testid=chat-input]", text)
    w.page.press("[data-testid=chat-input]", "Enter")


def open_chat(w: Watched, mode: str = "normal", model: str | None = None) -> None:
    w.goto("chat")
    w.page.wait_for_selector("[data-testid=model] option", state="attached")
    w.page.select_option("[data-testid=mode]", mode)
    if model:
        w.page.select_option("[data-testid=model]", model)


def unlabelled_controls(w: Watched) -> list[str]:
    return list(
        w.page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map((el) => el.outerHTML)"""
        )
    )


def no_horizontal_overflow(w: Watched, width: int) -> bool:
    # Not window.innerWidth: a mobile browser widens its layout viewport to fit content that overflows.
    return bool(w.page.evaluate(f"() => document.documentElement.scrollWidth <= {width}"))


# --- scripted models: fast and deterministic ---------------------------------------------------------


PAGES = {
    "chat": "[data-testid=welcome]",
    "data": "[data-testid=ds-list]",
    "knowledge": "[data-testid=space-create]",
    "models": "[data-testid=models-table]",
    "cache": "[data-testid=cache-summary]",
    "flows": "[data-testid=no-flows]",
}


def test_every_page_renders_offline_with_labelled_controls(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server)
    for route, ready in PAGES.items():
        w.goto(route)
        w.page.wait_for_selector(ready)
        assert w.page.locator(f'.nav a[data-page="{route}"][aria-current="page"]').count() == 1
        assert unlabelled_controls(w) == [], route
        w.shot(f"page-{route}")
    # The vendored libraries are installed and served by DataPilot itself.
    assert w.page.evaluate("() => Boolean(window.marked && window.DOMPurify && window.hljs && window.vegaEmbed)")
    assert w.page.locator("[data-testid=vendor-note]").count() == 0
    w.assert_clean()


def test_chat_streams_stops_and_persists_across_reloads(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server)
    open_chat(w, model="typist")
    send(w, "Show me streaming")
    answer = w.page.locator("[data-testid=answer-text]").first
    answer.wait_for()
    w.page.wait_for_function("() => document.querySelector('[data-testid=answer-text]').textContent.includes('word3')")
    partial = answer.text_content() or ""
    assert w.page.locator("[data-testid=stop]").is_visible()
    w.shot("chat-streaming")
    wait_answers(w, 1)
    final = answer.text_content() or ""
    assert final.startswith("Streaming works:") and "word59" in final and len(final) > len(partial)
    assert answer.locator("strong").text_content() == "works"  # markdown rendered

    # Stop: the answer breaks off, marked as stopped; send is back.
    send(w, "And again, but stop it")
    w.page.wait_for_function(
        "() => (document.querySelectorAll('[data-testid=answer-text]')[1]?.textContent || '').includes('word2')"
    )
    w.page.click("[data-testid=stop]")
    wait_answers(w, 2)
    second = w.page.locator("[data-testid=assistant-message]").nth(1)
    assert "stopped" in (second.locator(".meta").text_content() or "")
    assert "word59" not in (second.locator("[data-testid=answer-text]").text_content() or "")
    assert w.page.locator("[data-testid=send]").is_visible()

    # Conversations persist across reloads.
    w.page.reload()
    w.page.wait_for_selector("[data-testid=assistant-message] >> nth=1")
    assert w.page.locator("[data-testid=user-message]").count() == 2
    assert "word59" in (w.page.locator("[data-testid=answer-text]").first.text_content() or "")
    assert w.page.locator(".conversations .list-item").first.text_content() == "Show me streaming"
    w.shot("chat-persisted")
    w.assert_clean()


def test_data_question_shows_sql_table_and_chart(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server)
    open_chat(w, mode="data", model="sqlbot")
    assert w.page.locator("[data-testid=datasource]").input_value() == "sample"
    send(w, "How many customers are in each segment?")
    wait_answers(w, 1)
    msg = w.page.locator("[data-testid=assistant-message]").first
    assert "GROUP BY segment" in (msg.locator(".code-block[data-lang=sql]").text_content() or "")
    table = msg.locator("[data-testid=result-table]")
    first_cells = table.locator("tbody tr").first.locator("td")
    assert first_cells.all_text_contents() == ["Online", "43"]
    assert table.locator("tbody tr").count() == 3
    table.get_by_role("button", name="customers").click()  # sort ascending by the count
    assert first_cells.all_text_contents() == ["Retail", "37"]
    chart = msg.locator("[data-testid=chart][data-rendered=true]")
    chart.wait_for()
    assert chart.locator("svg .mark-rect path").count() == 3  # one bar per segment
    assert DATA_ANSWER in (msg.locator("[data-testid=answer-text]").text_content() or "")
    w.shot("chat-data-sql-table")  # the top of the answer: steps, SQL, the sorted table
    w.page.evaluate(
        "() => { const m = document.querySelector('.messages'); m.style.scrollBehavior = 'auto';"
        " m.scrollTop = m.scrollHeight; }"
    )
    w.shot("chat-data-table-chart")  # its bottom: the chart and the sentence
    w.assert_clean()


def test_thumbs_up_keeps_a_data_answer_as_a_verified_example(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server)
    open_chat(w, mode="data", model="sqlbot")
    question = f"How many customers are in each segment? ({uuid.uuid4().hex[:6]})"
    send(w, question)
    wait_answers(w, 1)
    msg = w.page.locator("[data-testid=assistant-message]").first
    assert msg.locator("[data-testid=confidence]").inner_text().startswith("confidence 100%")  # one candidate
    msg.get_by_role("button", name="Right: save as a verified example").click()
    msg.locator("[data-testid=feedback-status]", has_text="saved as a verified example").wait_for()
    assert msg.locator("[data-testid=feedback-up]").get_attribute("aria-pressed") == "true"
    assert msg.locator("[data-testid=feedback-down]").is_disabled()
    kept = httpx.get(f"{ui_server.url}/api/datasources/sample/examples", params={"verified": "true"}, timeout=10)
    assert any(e["question"] == question and "GROUP BY segment" in e["sql"] for e in kept.json()["data"])
    w.shot("chat-data-feedback")
    w.page.reload()  # the rating is kept with the answer
    wait_answers(w, 1)
    assert w.page.locator("[data-testid=feedback-up][aria-pressed=true]").count() == 1
    try:
        send(w, question)  # asked again: the verified SQL answers, and the answer says so
        wait_answers(w, 2)
        again = w.page.locator("[data-testid=assistant-message]").nth(1)
        assert "verified SQL reused" in again.locator("[data-testid=confidence]").inner_text()
        w.assert_clean()
    finally:  # the server is shared: its other tests ask this question without the example
        for e in kept.json()["data"]:
            if e["question"] == question:
                httpx.delete(f"{ui_server.url}/api/datasources/sample/examples/{e['id']}", timeout=10)


def test_agent_mode_appears_only_when_served_and_renders_its_events(
    ui_server: ServerProcess, open_page: PageFactory
) -> None:
    scenes = httpx.get(f"{ui_server.url}/api/chat/scenes", timeout=10).json()["data"]
    w = open_page(ui_server)
    open_chat(w)
    modes = w.page.eval_on_selector_all("[data-testid=mode] option", "els => els.map((e) => e.value)")
    # Every scene the server answers, but its plain "chat" scene, which is the page's own "normal" mode.
    assert modes[0] == "normal" and set(modes[1:]) == set(scenes) - {"chat"} and "chat" in scenes
    if "agent" not in scenes:
        return  # agents have not landed on this server: no agent mode, nothing more to see
    w.page.select_option("[data-testid=mode]", "agent")
    w.page.select_option("[data-testid=model]", "agentbot")
    send(w, "How many customers are in each segment?")
    wait_answers(w, 1, timeout=120_000)
    msg = w.page.locator("[data-testid=assistant-message]").first
    assert msg.locator("[data-testid=activity] li").count() > 3  # the agents' steps, in a collapsed log
    assert msg.locator("[data-event=report] h1, [data-event=report] h2").count() >= 1  # the report, as markdown
    assert msg.locator("[data-testid=result-table]").count() >= 1
    w.shot("chat-agent")
    w.assert_clean()


def test_cache_page_shows_the_hit_after_a_repeated_question(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server)
    open_chat(w, model="echo")
    question = f"What is the capital of France? ({uuid.uuid4().hex[:6]})"
    hit, attempt = False, 0
    deadline = time.monotonic() + 30  # answers are stored off the request path: the first repeats may miss
    while not hit and time.monotonic() < deadline:
        attempt += 1
        w.page.click("[data-testid=new-chat]")
        send(w, question)
        wait_answers(w, 1)
        hit = w.page.locator("[data-testid=cache-hit]").count() == 1
        if not hit:
            time.sleep(0.5)
    assert hit and attempt > 1, f"a repeated question was not answered from the cache ({attempt} tries)"
    assert "You said: What is the capital of France?" in (
        w.page.locator("[data-testid=answer-text]").text_content() or ""
    )
    # the cached answer carries thumbs: a wrong mark goes to the entry that answered
    w.page.get_by_role("button", name="Wrong: the cached answer does not fit this question").click()
    w.page.locator("[data-testid=cache-feedback-status]", has_text="marked wrong").wait_for()
    assert w.page.locator("[data-testid=cache-feedback-down]").get_attribute("aria-pressed") == "true"
    w.shot("chat-cache-hit")

    w.goto("cache")
    row = w.page.locator("[data-testid=log-row][data-hit=true]", has_text=question).first
    row.wait_for()
    assert w.page.locator("[data-testid=scope-row]", has_text="echo").count() == 1
    assert w.page.locator("[data-testid=hit-rate]").text_content() not in ("", "\u2013", "0%")
    w.page.select_option("[data-testid=feedback-scope]", '["echo",""]')
    mark = w.page.locator("[data-testid=feedback-row][data-right=false]", has_text=question).first
    mark.wait_for()
    assert "wrong" in (mark.text_content() or "")
    assert "No rule learned" in (w.page.locator("[data-testid=learned-rules]").text_content() or "")
    export = w.page.get_attribute("[data-testid=feedback-export]", "href") or ""
    pairs = [json.loads(line) for line in httpx.get(f"{ui_server.url}{export}", timeout=10).text.splitlines()]
    assert {"a": question, "b": question, "label": 0} in pairs
    w.shot("cache-hit")
    w.assert_clean()


def test_dark_mode(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server, color_scheme="dark")
    open_chat(w, mode="data", model="sqlbot")
    send(w, "How many customers are in each segment?")
    wait_answers(w, 1)
    w.page.locator("[data-testid=chart][data-rendered=true]").wait_for()
    background = w.page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 19, 25)", background
    w.shot("dark-chat-data")
    w.assert_clean()


def test_api_errors_are_shown_as_readable_messages(ui_server: ServerProcess, open_page: PageFactory) -> None:
    body = {"name": "bad-db", "kind": "postgresql", "url": "postgresql://nobody@127.0.0.1:1/none"}
    expected = httpx.post(f"{ui_server.url}/api/datasources", json=body, timeout=30).json()["error"]["message"]
    assert "could not connect" in expected
    w = open_page(ui_server)
    w.goto("data")
    w.page.wait_for_selector("[data-testid=ds-list]")
    w.page.fill("[data-testid=ds-name]", body["name"])
    w.page.select_option("[data-testid=ds-kind]", body["kind"])
    w.page.fill("[data-testid=ds-url]", body["url"])
    w.page.click("[data-testid=ds-add]")
    error = w.page.locator("[data-testid=ds-add-result] .notice.error")
    error.wait_for()
    assert expected in (error.text_content() or "")
    assert "{" not in (error.text_content() or "")  # a sentence, not a JSON dump
    error.scroll_into_view_if_needed()
    w.shot("error-readable", full_page=False)
    w.assert_clean(allow=HTTP_ERROR_LOG)


def test_pages_without_their_module_show_a_not_available_panel(
    ui_server: ServerProcess, open_page: PageFactory
) -> None:
    w = open_page(ui_server)
    missing = json.dumps(
        {"error": {"message": "Not Found", "type": "invalid_request_error", "param": None, "code": None}}
    )
    w.page.route(
        "**/api/cache/**", lambda route: route.fulfill(status=404, body=missing, content_type="application/json")
    )
    w.page.route(
        "**/api/v1/awel/**", lambda route: route.fulfill(status=404, body=missing, content_type="application/json")
    )
    w.goto("cache")
    panel = w.page.locator("[data-testid=unavailable]")
    panel.wait_for()
    assert "The cache is not available" in (panel.text_content() or "")
    w.shot("unavailable-cache")
    w.goto("flows")
    w.page.locator("[data-testid=unavailable]", has_text="Flows is not available").wait_for()
    w.assert_clean(allow=HTTP_ERROR_LOG)


def test_a_scene_is_drawn_changed_and_saved_as_a_new_scene(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server)
    w.goto("flows/scene:data")
    graph = w.page.locator("[data-testid=flow-graph]")
    graph.wait_for()
    info = httpx.get(f"{ui_server.url}/api/chat/scenes/data", timeout=10).json()
    assert graph.locator("g.node").count() == len(info["nodes"]) == 10
    dsl = w.page.locator("[data-testid=scene-dsl]")
    text = dsl.input_value()
    assert "text2sql_generate()" in text and "max_tokens = 80" in text
    dsl.fill(text.replace("max_tokens = 80", "max_tokens = 24"))
    w.page.fill("[data-testid=scene-name]", "ui_terse")
    w.page.click("[data-testid=scene-save]")
    w.page.locator("[data-testid=scene-saved]", has_text='"scene": "ui_terse"').wait_for()
    w.page.wait_for_selector('[data-scene="ui_terse"][aria-current=true]')
    w.shot("flows-scene-saved")
    saved = httpx.get(f"{ui_server.url}/api/chat/scenes/ui_terse", params={"format": "dsl"}, timeout=10).json()
    assert "max_tokens = 24" in saved["flow"] and saved["origin"].endswith("ui_terse.dsl")
    # A name taken by a built-in scene is refused, with the API's message shown.
    w.goto("flows/scene:chat")
    w.page.locator("[data-testid=scene-dsl]").wait_for()
    w.page.fill("[data-testid=scene-name]", "data")
    w.page.click("[data-testid=scene-save]")
    w.page.locator("[data-testid=scene-saved]", has_text="built-in scene").wait_for()
    w.assert_clean(allow=HTTP_ERROR_LOG)


def test_models_page_shows_health_figures_and_start_stop(ui_server: ServerProcess, open_page: PageFactory) -> None:
    reply = httpx.post(
        f"{ui_server.v1}/chat/completions",
        json={"model": "typist", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    )
    assert reply.status_code == 200
    w = open_page(ui_server)
    w.goto("models")
    typist = w.page.locator("[data-testid=model-row][data-model=typist]")
    typist.wait_for()
    cells = typist.locator("td")
    assert cells.nth(1).text_content() == "ready"
    assert cells.nth(3).text_content() != "\u2013"  # first-token latency
    assert float(cells.nth(4).text_content() or "0") > 0  # tokens/s
    broken = w.page.locator("[data-testid=model-row][data-model=broken]")
    assert "weights file is corrupt" in (broken.text_content() or "")
    w.shot("models")
    typist.get_by_role("button", name="stop typist").click()
    typist.locator("td").nth(1).filter(has_text="stopped").wait_for()
    typist.get_by_role("button", name="start typist").click()
    typist.locator("td").nth(1).filter(has_text="ready").wait_for()
    w.assert_clean()


def test_phone_screen(ui_server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(ui_server, width=390, height=844, has_touch=True, is_mobile=True)
    open_chat(w, model="echo")
    assert no_horizontal_overflow(w, 390)
    assert not w.page.locator("#nav").is_visible()
    send(w, "Hello from a phone")
    wait_answers(w, 1)
    assert "You said: Hello from a phone" in (w.page.locator("[data-testid=answer-text]").text_content() or "")
    assert no_horizontal_overflow(w, 390)
    w.shot("phone-chat")
    w.page.click("#nav-toggle")
    w.page.click('.nav a[data-page="data"]')
    w.page.wait_for_selector("[data-testid=schema-columns]")
    assert not w.page.locator("#nav").is_visible()
    assert no_horizontal_overflow(w, 390)
    w.shot("phone-data")
    w.assert_clean()


# --- the real path: Gemma 3 270M and MiniLM on the session server --------------------------------------


@pytest.mark.slow
def test_gemma_answer_streams_in(server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(server)
    open_chat(w, model="gemma-3-270m")
    send(w, "Name three uses of a database.")
    # Streaming itself is shown with the slow scripted typist above; the real model may finish its
    # short answer between two frames, so here the answer must arrive and hold text.
    wait_answers(w, 1, timeout=120_000)
    assert (w.page.locator("[data-testid=answer-text]").text_content() or "").strip()
    w.shot("chat-gemma")
    w.assert_clean()


@pytest.mark.slow
def test_gemma_data_question_on_the_sample_database(server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(server)
    open_chat(w, mode="data", model="gemma-3-270m")
    send(w, "How many customers are there?")
    wait_answers(w, 1, timeout=180_000)
    msg = w.page.locator("[data-testid=assistant-message]").first
    # A tiny base model: its SQL may be wrong, but it shows, and then a result or a readable error.
    assert "SELECT" in (msg.locator(".code-block[data-lang=sql]").first.text_content() or "").upper()
    outcome = msg.locator("[data-testid=result-table], [data-testid=chart], [data-testid=chat-error]")
    assert outcome.count() >= 1
    w.shot("chat-data-gemma")
    w.assert_clean()


@pytest.mark.slow
def test_knowledge_upload_shows_progress_document_and_chunks(
    server: ServerProcess, open_page: PageFactory, sample_document: Path
) -> None:
    space = f"ui-{uuid.uuid4().hex[:6]}"
    w = open_page(server)
    w.goto("knowledge")
    w.page.fill("[data-testid=space-name]", space)
    w.page.click("[data-testid=space-create]")
    w.page.locator("[data-testid=space-list] .list-item[aria-current=true]", has_text=space).wait_for()
    w.page.set_input_files("[data-testid=doc-files]", str(sample_document))
    w.page.click("[data-testid=doc-upload]")
    row = w.page.locator("[data-testid=document-row]", has_text=sample_document.name)
    row.wait_for()
    row.locator(".badge", has_text="done").wait_for(timeout=60_000)
    progress = w.page.locator("[data-testid=upload-progress]")
    w.page.wait_for_function(
        "() => document.querySelector('[data-testid=upload-progress]').getAttribute('aria-valuenow') === '100'"
    )
    assert progress.is_visible()
    row.get_by_role("button", name=f"Show chunks of {sample_document.name}").click()
    chunks = w.page.locator("[data-testid=chunks] .chunk")
    chunks.first.wait_for()
    assert chunks.count() >= 2 and "semantic cache" in (w.page.locator("[data-testid=chunks]").text_content() or "")
    w.shot("knowledge-upload")
    w.assert_clean()


@pytest.mark.slow
def test_flow_graph_and_run(server: ServerProcess, open_page: PageFactory) -> None:
    w = open_page(server)
    w.goto("flows/simple_rag_example")
    graph = w.page.locator("[data-testid=flow-graph]")
    graph.wait_for()
    info = httpx.get(f"{server.url}/api/v1/awel/flows/simple_rag_example", timeout=10).json()
    assert graph.locator("g.node").count() == len(info["graph"]["nodes"]) > 3
    assert graph.locator("path.edge").count() == len(info["graph"]["edges"])
    w.shot("flows-graph")
    w.page.click('[data-flow="echo_stream"]')
    w.page.wait_for_selector('[data-flow="echo_stream"][aria-current=true]')
    w.page.fill("[data-testid=flow-input]", '{"question": "hello flows"}')
    w.page.click("[data-testid=flow-run]")
    w.page.locator("[data-testid=flow-output] pre", has_text="hello flows").wait_for()
    w.shot("flows-run")
    w.assert_clean()


def test_without_the_vendored_libraries_the_ui_degrades_with_a_note(
    ui_server: ServerProcess, open_page: PageFactory, tmp_path: Path
) -> None:
    """Plain-text answers and tables instead of charts, and a note saying what to install."""
    static = tmp_path / "static"
    shutil.copytree(STATIC_DIR, static, ignore=shutil.ignore_patterns("vendor"))
    html = render_index(static)
    assert "/static/vendor/" not in html
    w = open_page(ui_server)
    w.page.route(f"{ui_server.url}/", lambda route: route.fulfill(body=html, content_type="text/html"))
    open_chat(w, mode="data", model="sqlbot")
    assert "run scripts/install.sh" in (w.page.locator("[data-testid=vendor-note]").text_content() or "")
    send(w, "How many customers are in each segment?")
    wait_answers(w, 1)
    msg = w.page.locator("[data-testid=assistant-message]").first
    assert msg.locator("[data-testid=result-table] tbody tr").count() == 3
    assert msg.locator("[data-testid=chart][data-kind=unavailable]").count() == 1
    assert msg.locator("[data-testid=answer-text].plain").text_content() == DATA_ANSWER
    w.shot("no-vendor-fallback")
    w.assert_clean()
