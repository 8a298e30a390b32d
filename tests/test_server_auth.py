"""Keys and tenants on a live ``ai-memory serve``: 401 without a good key on every route, 404 for another tenant's ids.

The route lists come from the app itself, so a route added later is covered
here or fails ``test_the_walk_covers_every_route``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from support.ai_memory_server import ServeProcess, headers

from ai_memory_sdk import Memory, inspector
from ai_memory_sdk.server import probes, routes

PARAMS = {
    "subject_id": "alice",
    "label": "human",
    "run_id": "run-1",
    "message_id": "msg-1",
    "session_id": "s1",
    "name": "inspector.css",
}
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/v1/subjects/{subject_id}"): {"reset": False, "blocks": []},
    ("PUT", "/v1/subjects/{subject_id}/blocks/{label}"): {"description": "d"},
    ("PATCH", "/v1/subjects/{subject_id}/blocks/{label}"): {"value": "v"},
    ("POST", "/v1/subjects/{subject_id}/blocks/{label}/restore"): {"version": 1},
    ("POST", "/v1/subjects/{subject_id}/messages"): {"messages": [{"role": "user", "content": "hi"}]},
    ("POST", "/v1/subjects/{subject_id}/search"): {"query": "hi"},
    ("POST", "/v1/sessions/{session_id}/items"): {"items": [{"a": 1}], "subject_id": "alice"},
}


def _all_routes() -> list[tuple[str, str]]:
    """Every (method, path template) the app answers but ``/healthz``: /docs and /openapi.json included."""
    docs = FastAPI().routes  # the documentation routes every FastAPI app has
    found = {
        (method, route.path)
        for route in (*docs, *routes.router.routes, *probes.router.routes)
        for method in getattr(route, "methods", ())
        if method != "HEAD" and route.path != "/healthz"
    }
    ui = inspector.router(lambda request: None).routes  # type: ignore[arg-type, return-value]
    found |= {(method, "/ui" + route.path) for route in ui for method in getattr(route, "methods", ())}
    return sorted(found)


ROUTES = _all_routes()
BAD_KEYS = {
    "missing": None,
    "malformed-scheme": "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
    "malformed-key": "Bearer not-a-key",
    "malformed-empty": "Bearer",
    "unknown": "Bearer aim_" + "A" * 43,
}


def _url(server: ServeProcess, template: str) -> str:
    return server.url + template.format(**PARAMS)


@pytest.fixture(scope="module")
def revoked(ai_memory_server: ServeProcess) -> str:
    """A key revoked with the real command while the server runs."""
    name = f"gone-{uuid.uuid4().hex[:8]}"
    key = ai_memory_server.key(name)
    assert httpx.get(f"{ai_memory_server.url}/v1/subjects", headers=headers(key)).status_code == 200
    done = subprocess.run(
        [sys.executable, "-m", "ai_memory_sdk.cli", "keys", "revoke", name, "--path", ai_memory_server.path],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return key


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_needs_a_good_key(ai_memory_server: ServeProcess, revoked: str, method: str, template: str) -> None:
    cases = {**BAD_KEYS, "revoked": f"Bearer {revoked}"}
    body = BODIES.get((method, template))
    with httpx.Client() as client:
        for case, header in cases.items():
            sent = {} if header is None else {"Authorization": header}
            for content in [body, "{not json"] if body is not None else [None]:
                kwargs: dict[str, Any] = {"headers": sent}
                if isinstance(content, str):
                    kwargs["content"] = content
                    sent = {**sent, "Content-Type": "application/json"}
                    kwargs["headers"] = sent
                elif content is not None:
                    kwargs["json"] = content
                r = client.request(method, _url(ai_memory_server, template), **kwargs)
                assert r.status_code == 401, (case, content, r.status_code, r.text)
                assert r.json()["error"]["type"] == "Unauthorized", r.text
                browser = template.startswith(("/ui", "/docs"))  # pages a person opens ask for the key as a password
                assert r.headers["www-authenticate"].startswith("Basic realm=" if browser else "Bearer"), r.headers
                assert "alice" not in r.text


def test_an_unknown_path_needs_a_key_too(ai_memory_server: ServeProcess) -> None:
    assert httpx.get(f"{ai_memory_server.url}/v1/nothing-here").status_code == 401
    r = httpx.get(f"{ai_memory_server.url}/v1/nothing-here", headers=headers(ai_memory_server.key()))
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"


def test_healthz_needs_no_key(ai_memory_server: ServeProcess) -> None:
    r = httpx.get(f"{ai_memory_server.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# -- tenants --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def owner(ai_memory_server: ServeProcess) -> Iterator[dict[str, Any]]:
    """Tenant A's data: subject 'alice' with blocks, archived messages, a learned run, a session."""
    key = ai_memory_server.key()
    memory = Memory(server_url=ai_memory_server.url, server_api_key=key)
    run = memory.add_messages("alice", [{"role": "user", "content": "My name is Alice and I love otters"}], False)
    memory.wait_for_run(run, timeout=30)
    message = memory.get_messages("alice")[0]
    with httpx.Client(base_url=ai_memory_server.url, headers=headers(key)) as client:
        r = client.post("/v1/sessions/s1/items", json={"items": [{"note": "otter-session"}], "subject_id": "alice"})
        assert r.status_code == 204
    state = {"key": key, "memory": memory, "run_id": run, "message_id": message.id}
    yield state
    memory.close()


WALK: dict[tuple[str, str], tuple[int, Any]] = {
    # (method, path): (status another tenant gets with the owner's ids, body)
    ("GET", "/v1/subjects/{subject_id}"): (404, None),
    ("DELETE", "/v1/subjects/{subject_id}"): (404, None),
    ("GET", "/v1/subjects/{subject_id}/blocks"): (404, None),
    ("GET", "/v1/subjects/{subject_id}/blocks/{label}"): (404, None),
    ("PATCH", "/v1/subjects/{subject_id}/blocks/{label}"): (404, {"value": "hacked"}),
    ("DELETE", "/v1/subjects/{subject_id}/blocks/{label}"): (404, None),
    ("GET", "/v1/subjects/{subject_id}/blocks/{label}/history"): (404, None),
    ("POST", "/v1/subjects/{subject_id}/blocks/{label}/restore"): (404, {"version": 1}),
    ("GET", "/v1/subjects/{subject_id}/messages"): (404, None),
    ("POST", "/v1/subjects/{subject_id}/consolidate"): (404, None),
    ("GET", "/v1/subjects/{subject_id}/runs"): (404, None),
    ("POST", "/v1/subjects/{subject_id}/search"): (404, {"query": "otters", "tags": []}),
    ("DELETE", "/v1/messages/{message_id}"): (404, None),
    ("GET", "/v1/runs/{run_id}"): (404, None),
    ("GET", "/v1/runs/{run_id}/wait"): (404, None),
    ("POST", "/v1/runs/{run_id}/cancel"): (404, None),
    ("POST", "/v1/runs/{run_id}/retry"): (404, None),
    ("GET", "/v1/runs/{run_id}/messages"): (404, None),
    ("GET", "/v1/runs/{run_id}/trace"): (404, None),
    # Lists and sessions answer the asking tenant's own (empty) data; creating makes the asker's own subject.
    ("GET", "/v1/subjects"): (200, None),
    ("GET", "/v1/subjects:count"): (200, None),
    ("GET", "/v1/sessions/{session_id}/items"): (200, None),
    ("POST", "/v1/sessions/{session_id}/pop"): (200, None),
    ("DELETE", "/v1/sessions/{session_id}"): (204, None),
    ("POST", "/v1/sessions/{session_id}/items"): (204, {"items": [{"mine": True}], "subject_id": "alice"}),
    ("PUT", "/v1/subjects/{subject_id}/blocks/{label}"): (200, {"description": "the intruder's own"}),
    ("POST", "/v1/subjects/{subject_id}/messages"): (202, {"messages": [{"role": "user", "content": "I am Mallory"}]}),
    ("PUT", "/v1/subjects/{subject_id}"): (201, {"reset": True}),
}


def test_the_walk_covers_every_route() -> None:
    api = {(m, r.path) for r in routes.router.routes for m in getattr(r, "methods", ())}
    assert api == set(WALK), sorted(api ^ set(WALK))


def test_another_tenant_gets_404_for_every_id_and_changes_nothing(
    ai_memory_server: ServeProcess, owner: dict[str, Any]
) -> None:
    intruder = ai_memory_server.key()
    ids = {**PARAMS, "run_id": owner["run_id"], "message_id": owner["message_id"]}
    before = _snapshot(owner["memory"])
    with httpx.Client(base_url=ai_memory_server.url, headers=headers(intruder)) as client:
        for (method, template), (status, body) in WALK.items():  # reads first, then the intruder's own writes
            r = client.request(method, template.format(**ids), json=body)
            assert r.status_code == status, (method, template, r.status_code, r.text)
            assert "otter" not in r.text and "Alice" not in r.text, (method, template, r.text)
            if status == 404:  # an error that names what was asked for, and nothing else
                assert set(r.json()) == {"error"} and r.json()["error"]["type"].endswith("NotFoundError"), r.text
            else:
                assert owner["run_id"] not in r.text and owner["message_id"] not in r.text, (template, r.text)
    assert _snapshot(owner["memory"]) == before  # nothing of the owner's changed
    with httpx.Client(base_url=ai_memory_server.url, headers=headers(owner["key"])) as client:
        assert client.get("/v1/sessions/s1/items").json() == [{"note": "otter-session"}]


def _snapshot(memory: Memory) -> Any:
    return (
        [(b.label, b.value) for b in memory.list_blocks("alice")],
        [m.id for m in memory.get_messages("alice")],
        [(r.id, r.status) for r in memory.list_runs("alice")],
        memory.search("alice", "otters"),
        memory.get_run(memory.list_runs("alice")[0].id).status,
    )


def test_two_tenants_share_a_subject_id_and_nothing_else(ai_memory_server: ServeProcess) -> None:
    a = Memory(server_url=ai_memory_server.url, server_api_key=ai_memory_server.key())
    b = Memory(server_url=ai_memory_server.url, server_api_key=ai_memory_server.key())
    try:
        ra = a.add_messages("alice", [{"role": "user", "content": "My name is Alice, I live in Paris"}], False)
        rb = b.add_messages("alice", [{"role": "user", "content": "My name is Alicia, I live in Rome"}], False)
        a.wait_for_run(ra, timeout=30)
        b.wait_for_run(rb, timeout=30)
        assert "Paris" in (a.get_user_memory("alice") or "") and "Rome" not in (a.get_user_memory("alice") or "")
        assert "Rome" in (b.get_user_memory("alice") or "") and "Paris" not in (b.get_user_memory("alice") or "")
        assert a.search("alice", "Rome") == [] and b.search("alice", "Paris") == []
        assert a.get_memory_agent_id("alice") != b.get_memory_agent_id("alice")
        assert [s.subject_id for s in a._engine.list_subjects(query=None, offset=0, limit=10)] == ["alice"]
        assert a.get_run(ra).id == ra
        with pytest.raises(LookupError):
            b.get_run(ra)
        b.delete_user("alice")
        assert a.get_user_memory("alice") is not None
    finally:
        a.close()
        b.close()


def test_the_inspector_shows_each_key_its_own_tenant(ai_memory_server: ServeProcess, owner: dict[str, Any]) -> None:
    with httpx.Client(base_url=ai_memory_server.url, headers=headers(owner["key"])) as client:
        mine = client.get("/ui/subject", params={"id": "alice", "tab": "messages"})
        assert mine.status_code == 200 and "otters" in mine.text
        assert "otters" in client.get(f"/ui/run/{owner['run_id']}").text
    with httpx.Client(base_url=ai_memory_server.url, headers=headers(ai_memory_server.key())) as client:
        listed = client.get("/ui/")
        assert listed.status_code == 200 and "alice" not in listed.text
        for path in ("/ui/subject?id=alice&tab=messages", f"/ui/run/{owner['run_id']}"):
            r = client.get(path)
            assert r.status_code == 404 and "otters" not in r.text, (path, r.status_code)


def test_a_browser_gets_the_inspector_with_the_key_as_password(
    ai_memory_server: ServeProcess, owner: dict[str, Any]
) -> None:
    """A browser cannot send a Bearer header from a link: /ui asks for the key (Basic), and takes it there."""
    with httpx.Client(base_url=ai_memory_server.url) as client:
        asked = client.get("/ui/")
        assert asked.status_code == 401 and asked.headers["www-authenticate"].startswith("Basic ")
        assert client.get("/v1/subjects").headers["www-authenticate"] == "Bearer"  # programs are not asked
        page = client.get("/ui/subject", params={"id": "alice", "tab": "messages"}, auth=("me", owner["key"]))
        assert page.status_code == 200 and "otters" in page.text
        assert client.get("/ui/", auth=("me", "aim_" + "x" * 43)).status_code == 401
