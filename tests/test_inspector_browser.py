"""The inspector in a real browser: headless Chromium (the Debian package) driven by Playwright.

The pages are served by uvicorn on 127.0.0.1 over a store the real LLM learner
filled through the scripted OpenAI-compatible server; the application's
``Memory`` keeps its background workers, as when the inspector is mounted in
the HTTP server, so a run retried from the page is learned. Screenshots of
the main pages at 1280x800 and at 390 px wide are saved under the test's
``tmp_path``/screenshots (the path is printed).

Without Chromium or Playwright the tests skip with the install command; with
``CI`` set they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from support.inspector_data import HOSTILE, llm_options, populate, responder, serve
from support.openai_server import ScriptedOpenAI

from ai_memory_sdk import __version__
from ai_memory_sdk.inspector import engine_of, router

CHROMIUM = os.environ.get("AI_MEMORY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
INSTALL = "apt-get install -y chromium && pip install 'ai-memory-sdk[test]' (playwright)"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


def _missing(what: str) -> None:
    message = f"{what} is missing: {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package")
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium ({CHROMIUM})")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data dir
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport=WIDE,
        )
        context.set_default_timeout(20_000)
        yield context
        context.close()


@pytest.fixture(scope="module")
def site(browser, tmp_path_factory):  # the browser first: without one, skip before building the store
    from ai_memory_sdk import Memory

    with ScriptedOpenAI() as server:
        server.responder = responder
        mem = Memory(path=str(tmp_path_factory.mktemp("inspector") / "m.db"), **llm_options(server))
        data = populate(mem, extra_subjects=52)
        app = FastAPI()
        app.include_router(router(engine_of(mem)), prefix="/ui")
        with serve(app) as url:
            yield mem, data, f"{url}/ui/", server
        mem.close()


@pytest.fixture
def page(browser, request):
    p = browser.new_page()
    p.on("dialog", lambda dialog: dialog.accept())  # the confirm() before a restore, retry or cancel
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield p
    p.close()
    assert errors == [], f"the page logged errors: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    out = tmp_path_factory.mktemp("screenshots")
    print(f"\ninspector screenshots: {out}")
    return out


def _both_widths(page, shots: Path, name: str) -> None:
    """Screenshot the page wide and narrow; at 390 px nothing may stick out sideways."""
    page.set_viewport_size(WIDE)
    page.screenshot(path=str(shots / f"{name}-1280.png"), full_page=True)
    page.set_viewport_size(NARROW)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    page.screenshot(path=str(shots / f"{name}-390.png"), full_page=True)
    page.set_viewport_size(WIDE)
    assert overflow <= NARROW["width"], f"{name}: the page is {overflow} px wide at 390 px"


def test_subject_list_pages_and_finds_a_subject(site, page, shots):
    _, data, url, _ = site
    page.goto(url)
    assert page.locator("h1").inner_text() == "Subjects"
    assert page.locator(".count").inner_text() == "54 subjects"
    assert page.locator("a.subject-link").count() == 50
    _both_widths(page, shots, "subjects")
    page.get_by_role("link", name="next →").click()
    assert page.locator("a.subject-link").count() == 4
    page.fill("input[name=q]", "alice")
    page.get_by_role("button", name="Find").click()
    assert page.locator("a.subject-link").all_inner_texts() == [data.alice]
    page.click("a.subject-link")
    assert page.locator("h1").inner_text() == data.alice
    assert page.locator("section.block h2").all_inner_texts() == ["human", "summary", "notes"]


def test_restore_an_older_version_through_the_page(site, page, shots):
    mem, data, url, _ = site
    page.goto(f"{url}subject?id=alice%40example.com")
    before = mem.block_history("human", data.alice)
    target = next(v for v in before if v.value == "name is Alice")  # what the first learned run wrote
    history = page.locator("#block-human details.history")
    history.locator("> summary").click()
    assert history.locator("li.version").count() == len(before)
    _both_widths(page, shots, "subject-blocks")
    entry = page.locator(f"#block-human-v{target.version}")
    assert "by run" in entry.inner_text() and entry.locator("ins").inner_text() == "name is Alice"
    entry.get_by_role("button", name="Restore this version").click()
    page.wait_for_selector(".notice")
    assert f"restored to the text of version {target.version}" in page.locator(".notice").inner_text()
    after = mem.block_history("human", data.alice)
    assert len(after) == len(before) + 1
    assert after[-1].value == "name is Alice" and after[-1].run_id is None
    assert mem.get_memory("human", subject_id=data.alice) == "name is Alice"
    assert page.locator("#block-human pre.value").first.inner_text() == "name is Alice"
    newest = page.locator("#block-human li.version").first
    assert f"the text of v{target.version}" in newest.inner_text() and "current" in newest.inner_text()


def test_retry_a_failed_run_from_the_page(site, page, shots):
    mem, data, url, server = site
    assert mem.get_run(data.failed_run).status == "failed"
    page.goto(f"{url}subject?id=bob&tab=runs")
    row = page.locator("table.runs tbody tr", has_text=data.failed_run)
    assert "failed" in row.inner_text() and "FAILME" in row.inner_text()
    _both_widths(page, shots, "subject-runs")
    page.goto(f"{url}run/{data.failed_run}")
    assert "the model refused this batch" in page.locator(".error-box").inner_text()
    _both_widths(page, shots, "run-failed")
    server.responder = lambda request: responder(_without_failme(request))  # the model accepts it now
    try:
        page.get_by_role("button", name="Retry").click()
        page.wait_for_selector(".notice")
        assert "queued again" in page.locator(".notice").inner_text()
        mem.wait_for_run(data.failed_run, timeout=30)
    finally:
        server.responder = responder
    assert mem.get_run(data.failed_run).status == "completed"
    assert "likes chess" in mem.get_memory("human", subject_id=data.bob)
    page.wait_for_selector(".status-completed", timeout=15_000)  # the page reloads itself until the run ends
    assert page.locator(".change ins").first.inner_text().strip() == "likes chess"


def _without_failme(request):
    return json.loads(json.dumps(request).replace("FAILME", "ok"))


def test_search_a_subjects_passages(site, page, shots):
    _, _, url, _ = site
    page.goto(f"{url}subject?id=alice%40example.com&tab=search")
    page.fill("input[name=q]", "octopuses")
    page.fill("input[name=tags]", "user")
    page.get_by_role("button", name="Search").click()
    results = page.locator("li.result")
    assert results.count() == 1
    first = results.first
    assert "I adore octopuses" in first.locator(".content").inner_text()
    assert first.locator(".role").inner_text() == "user" and first.locator(".tag").inner_text() == "#user"
    assert float(first.locator(".score").inner_text()) > 0
    _both_widths(page, shots, "subject-search")


def test_markup_in_a_block_renders_as_text(site, page):
    _, _, url, _ = site
    page.goto(f"{url}subject?id=alice%40example.com")
    value = page.locator("#block-notes pre.value").first
    assert value.inner_text() == HOSTILE
    assert value.locator("b").count() == 0 and value.locator("script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_run_page_shows_messages_diff_and_trace(site, page, shots):
    _, data, url, _ = site
    page.goto(f"{url}run/{data.alice_runs[1]}")
    assert page.locator(".status").first.inner_text() == "completed"
    assert page.locator(".change ins").inner_text().strip() == "lives in Porto"
    assert "I moved to Porto" in page.locator(".messages").inner_text()
    trace = page.locator("section.trace")
    assert "memory_insert" in trace.inner_text() and "lives in Porto" in trace.locator(".edits").inner_text()
    step = trace.locator("details.step").first  # the LLM step as the learner recorded it
    assert "420 prompt + 37 completion tokens" in step.locator("summary").inner_text()
    sent = {t.split("\n", 1)[0].strip(): t for t in step.locator(".sent").all_inner_texts()}  # by role
    assert set(sent) == {"system", "user"} and "I moved to Porto" in sent["user"]
    assert "memory_insert" in step.locator(".calls").inner_text() and "OK" in step.locator(".answer").first.inner_text()
    _both_widths(page, shots, "run")
    page.goto(f"{url}subject?id=alice%40example.com&tab=messages")
    assert page.locator("li.message").count() == 6
    _both_widths(page, shots, "subject-messages")


def test_no_request_leaves_127_0_0_1(site, page):
    """Nothing is fetched from the internet: every request a page makes goes to the local server."""
    _, _, url, _ = site
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    for path in ("", "subject?id=alice%40example.com", "subject?id=bob&tab=runs"):
        page.goto(url + path)
    assert seen and all(u.startswith("http://127.0.0.1:") for u in seen), seen
    assert any(u.endswith(f"/ui/static/inspector.css?v={__version__}") for u in seen)
