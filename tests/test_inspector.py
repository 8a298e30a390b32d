"""The inspector over HTTP (a real uvicorn server on 127.0.0.1, httpx) and its view helpers.

The browser test (test_inspector_browser.py) clicks through the pages; this
file checks what each request answers: status, escaping, CSRF refusals,
errors named, tenant views, and the diff/timeline/trace helpers on their own.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from support.inspector_data import HOSTILE, llm_options, populate, responder, serve
from support.openai_server import ScriptedOpenAI

from ai_memory_sdk.inspector import engine_of, router, views
from ai_memory_sdk.inspector.csrf import COOKIE, FIELD
from ai_memory_sdk.models import BlockSpec, BlockVersion


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A populated store (LLM learner on the scripted server) with the inspector mounted under /ui."""
    from ai_memory_sdk import Memory

    with ScriptedOpenAI() as server:
        server.responder = responder
        mem = Memory(path=str(tmp_path_factory.mktemp("inspector") / "m.db"), **llm_options(server))
        data = populate(mem, extra_subjects=52)
        app = FastAPI()
        app.include_router(router(engine_of(mem)), prefix="/ui")
        with serve(app) as url, httpx.Client(base_url=url, follow_redirects=False, timeout=30) as client:
            yield mem, data, client
        mem.close()


def _token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    match = re.search(rf'name="{FIELD}" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF field"
    assert client.cookies.get(COOKIE) == match.group(1)
    return match.group(1)


def test_pages_answer_with_links_under_the_mount_and_strict_headers(site):
    _, data, client = site
    home = client.get("/ui/")
    assert home.status_code == 200
    assert "54 subjects" in home.text  # alice, bob and 52 more
    assert home.text.count('class="subject-link"') == 50
    assert 'href="/ui/?page=2"' in home.text and 'href="/ui/subject?id=alice%40example.com"' in home.text
    csp = home.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert home.headers["x-content-type-options"] == "nosniff"
    assert 'href="/ui/static/inspector.css' in home.text
    assert "subject-link" in client.get("/ui/?page=2").text
    found = client.get("/ui/", params={"q": "ALICE"})
    assert found.text.count('class="subject-link"') == 1 and "alice@example.com" in found.text
    for tab in ("blocks", "runs", "messages", "search"):
        page = client.get("/ui/subject", params={"id": data.alice, "tab": tab})
        assert page.status_code == 200, (tab, page.text)
    run = client.get(f"/ui/run/{data.alice_runs[0]}")
    assert run.status_code == 200
    assert "memory_insert" in run.text and "<ins>name is Alice</ins>" in run.text
    css = client.get("/ui/static/inspector.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_values_from_the_store_are_text_never_markup(site):
    mem, data, client = site
    page = client.get("/ui/subject", params={"id": data.alice}).text
    assert "<script>window.__pwned" not in page and "<b>bold?</b>" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;b&gt;bold?&lt;/b&gt; &amp; &#34;quotes&#34;" in page
    assert mem.get_memory("notes", subject_id=data.alice) == HOSTILE  # shown, not altered


def test_bad_requests_are_named(site):
    _, data, client = site
    cases = {
        "/ui/subject?id=nobody": (404, "no subject &#39;nobody&#39;"),
        "/ui/subject": (400, "subject_id must be a string"),
        f"/ui/subject?id={data.alice}&tab=nope": (400, "tab must be one of blocks, runs, messages, search"),
        "/ui/?page=0": (400, "page must be a whole number of at least 1, got &#39;0&#39;"),
        "/ui/?page=x": (400, "page must be a whole number"),
        "/ui/run/run-nope": (404, "no run &#39;run-nope&#39;"),
        "/ui/static/..%2Froutes.py": (404, ""),
        "/ui/static/secret.txt": (404, ""),
    }
    for path, (status, text) in cases.items():
        answer = client.get(path)
        assert answer.status_code == status, (path, answer.status_code)
        assert text in answer.text, (path, answer.text[-600:])
    search = client.get("/ui/subject", params={"id": data.alice, "tab": "search", "q": "tea", "tags": "x" * 65})
    assert search.status_code == 200 and "tags[0] must be 1-64 characters" in search.text


def test_state_changes_need_the_page_token(site):
    mem, data, client = site
    before = mem._engine.block_history(data.alice, "human")
    form = {"id": data.alice, "label": "human", "version": str(before[1].version)}
    fresh = httpx.Client(base_url=str(client.base_url))
    assert fresh.post("/ui/subject/restore", data=form).status_code == 403  # no cookie, no token
    token = _token(client, f"/ui/subject?id={data.alice}")
    assert client.post("/ui/subject/restore", data={**form, FIELD: "forged.0"}).status_code == 403
    foreign = client.post("/ui/subject/restore", data={**form, FIELD: token}, headers={"Origin": "https://evil.test"})
    assert foreign.status_code == 403 and "another origin" in foreign.text
    other = httpx.Client(base_url=str(client.base_url))
    other.cookies.set(COOKIE, token)
    assert other.post("/ui/subject/restore", data={**form, FIELD: "x"}).status_code == 403  # token must match
    as_json = client.post("/ui/subject/restore", json={**form, FIELD: token})
    assert as_json.status_code == 415
    assert mem._engine.block_history(data.alice, "human") == before, "a refused request changed the store"

    done = client.post("/ui/subject/restore", data={**form, FIELD: token})
    assert done.status_code == 303
    assert done.headers["location"].startswith("/ui/subject?id=alice%40example.com&tab=blocks&notice=restored")
    after = mem._engine.block_history(data.alice, "human")
    assert len(after) == len(before) + 1 and after[-1].value == before[1].value and after[-1].run_id is None
    shown = client.get(done.headers["location"]).text
    assert "restored to the text of version 2" in shown and "the text of v2" in shown


def test_action_errors_are_pages_not_tracebacks(site):
    _, data, client = site
    token = _token(client, f"/ui/subject?id={data.alice}")
    missing = client.post(
        "/ui/subject/restore", data={"id": data.alice, "label": "human", "version": "999", FIELD: token}
    )
    assert missing.status_code == 404 and "has no version 999" in missing.text
    no_version = client.post("/ui/subject/restore", data={"id": data.alice, "label": "human", FIELD: token})
    assert no_version.status_code == 400 and "version is missing" in no_version.text
    completed = client.post(f"/ui/run/{data.alice_runs[0]}/retry", data={FIELD: token})
    assert completed.status_code == 409
    cancel_done = client.post(f"/ui/run/{data.alice_runs[0]}/cancel", data={FIELD: token})
    assert cancel_done.status_code == 409
    assert client.post("/ui/run/run-nope/retry", data={FIELD: token}).status_code == 404


def test_the_router_serves_each_request_its_engine(tmp_path):
    """The HTTP server's mount: each request gets its tenant's engine, and sees only that tenant's subjects."""
    from ai_memory_sdk import Memory

    mem = Memory(path=str(tmp_path / "t.db"), learner="offline", embedder="none", background=False)
    try:
        views_by_key = {"key-a": mem._engine.scoped("tenant-a"), "key-b": mem._engine.scoped("tenant-b")}
        views_by_key["key-a"].create_subject(
            "only-in-a", reset=False, blocks=[BlockSpec(label="human", description="")]
        )

        def engine_for(request):
            engine = views_by_key.get(request.headers.get("x-key", ""))
            if engine is None:
                from fastapi import HTTPException

                raise HTTPException(401, "an API key is required")
            return engine

        app = FastAPI()
        app.include_router(router(engine_for), prefix="/ui")

        @app.get("/")
        def root() -> Response:
            return Response("api")

        with serve(app) as url:
            assert httpx.get(f"{url}/ui/").status_code == 401
            a = httpx.get(f"{url}/ui/", headers={"x-key": "key-a"})
            b = httpx.get(f"{url}/ui/", headers={"x-key": "key-b"})
            assert "only-in-a" in a.text and "1 subject" in a.text
            assert "only-in-a" not in b.text and "0 subjects" in b.text
            assert httpx.get(f"{url}/ui/subject?id=only-in-a", headers={"x-key": "key-b"}).status_code == 404
            assert httpx.get(url).text == "api"
    finally:
        mem.close()


# -- view helpers -----------------------------------------------------------------------------------


def _text(segments, ops=("same", "added")):
    return "".join(s.text for s in segments if s.op in ops)


def test_diff_shows_words_added_and_removed_and_folds_long_unchanged_text():
    d = views.diff("likes tea and cats", "likes coffee and cats")
    assert [(s.op, s.text) for s in d if s.op != "same"] == [("removed", "tea"), ("added", "coffee")]
    assert _text(d) == "likes coffee and cats" and _text(d, ("same", "removed")) == "likes tea and cats"
    assert views.diff("same", "same") == [views.Segment("same", "same")] and not views.changed(views.diff("a", "a"))
    assert views.diff(None, "new") == [views.Segment("added", "new")] and views.diff(None, "") == []
    long_old = "x " * 1000 + "end"
    folded = views.diff(long_old, long_old.replace("end", "finish"))
    assert folded[0].op == "folded" and folded[0].text == "1,920 unchanged characters"
    assert [s.op for s in folded[1:]] == ["same", "removed", "added"] and len(folded[1].text) == 80


def test_timeline_is_newest_first_and_names_restores():
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    history = [
        BlockVersion(version=1, value="", created_at=t0),
        BlockVersion(version=2, value="Name: Bob", run_id="run-1", created_at=t0),
        BlockVersion(version=3, value="Name: Bob\nLikes tea", run_id="run-2", created_at=t0),
        BlockVersion(version=4, value="Name: Bob", created_at=t0),
    ]
    line = views.timeline(history)
    assert [v.version for v in line] == [4, 3, 2, 1]
    assert line[0].current and not any(v.current for v in line[1:])
    assert line[0].same_as == 2 and line[1].same_as is None and line[3].previous is None
    assert [(s.op, s.text) for s in line[0].diff if s.op != "same"] == [("removed", "\nLikes tea")]
    changes = views.run_changes({"human": history}, ["run-2"])
    assert [(c.label, c.version.version) for c in changes] == [("human", 3)]


def test_trace_steps_render_whatever_shape_they_have():
    recorded = [
        {
            "step": 1,
            "request": {
                "messages": [
                    {"index": 0, "role": "system", "content": "You are the memory agent."},
                    {"index": 1, "role": "user", "content": "user: hi, I am Bob"},
                ],
                "tools": ["memory_insert", "memory_finish_edits"],
            },
            "response": {
                "content": "",
                "tool_calls": [
                    {"id": "c1", "name": "memory_insert", "arguments": '{"label": "human", "new_str": "Bob"}'},
                    {"id": "c2", "name": "memory_finish_edits", "arguments": "not json"},
                ],
            },
            "answers": [{"tool_call_id": "c1", "answer": "ok"}, {"tool_call_id": "zz", "answer": "orphan"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 9},
            "retried": ["HTTP 429"],
        },
        {
            "step": 2,
            "request": {
                "messages": [
                    {"index": 1, "role": "user", "prefix_chars": 18, "content_tail": "\nanswers so far: ok"},
                    {"index": 2, "role": "assistant", "echo": "response"},
                    {"index": 3, "role": "tool", "echo": "answer", "tool_call_id": "c1"},
                ]
            },
            "response": "an unexpected string",
            "surprise": {"nested": [1, 2]},
        },
        "not even a dict",
    ]
    one, two, three = views.steps(recorded)
    assert one.title == "Step 1" and [m.role for m in one.sent] == ["system", "user"]
    assert one.tools == ["memory_insert", "memory_finish_edits"]
    assert one.calls[0].arguments == '{"label": "human", "new_str": "Bob"}' and one.calls[0].answer == "ok"
    assert one.calls[1].arguments == "not json" and one.calls[1].answer is None
    assert one.usage == "100 prompt + 9 completion tokens"
    assert {i.name for i in one.other} == {"retried", "answers"} and "orphan" in str(one.other)
    assert two.sent[0].note.startswith("as in the step before for its first 18 characters")
    assert two.sent[0].text == "\nanswers so far: ok" and "previous step's response" in two.sent[1].note
    assert "(c1)" in two.sent[2].note
    assert {i.name: i.text for i in two.other} == {
        "response": "an unexpected string",
        "surprise": '{"nested": [1, 2]}',
    }
    assert three.other[0].text == "not even a dict"
    assert views.steps(None) == [] and views.steps({"odd": 1})[0].other[0].name == "steps"
    long = {"text": "x" * 70}
    assert views.pretty(long) == '{\n  "text": "' + "x" * 70 + '"\n}' and views.pretty([1, 2]) == "[1, 2]"
    assert views.edits([{"tool": "memory_rethink", "args": {"label": "human"}}, 5]) == [
        ("memory_rethink", [views.Item("label", "human")]),
        ("?", [views.Item("edit", "5")]),
    ]


def test_pager_and_fill():
    p = views.Pager(2, 50, 120)
    assert (p.offset, p.first, p.last, p.pages, p.has_prev, p.has_next) == (50, 51, 100, 3, True, True)
    assert views.Pager(1, 50, 0).pages == 1 and views.Pager(1, 50, 0).first == 0
    assert views.fill(73, 10_000) == 1 and views.fill(120, 100) == 120


def test_a_crafted_notice_link_shows_nothing(site):
    _, data, client = site
    honest = client.get(
        "/ui/subject", params={"id": data.alice, "notice": "restored", "label": "human", "version": "2"}
    )
    assert "restored to the text of version 2" in honest.text
    for bad in ({"label": "<b>x</b>"}, {"version": "2; call us"}, {"notice": "hacked"}):
        params = {"id": data.alice, "notice": "restored", "label": "human", "version": "2", **bad}
        page = client.get("/ui/subject", params=params)
        assert page.status_code == 200 and 'class="notice"' not in page.text, bad
