"""The HTTP API on a live server: its schema, its errors, its limits, request ids, probes and metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.ai_memory_server import ServeProcess, ThreadServer, headers
from support.openai_server import ScriptedOpenAI, fail, reply

from ai_memory_sdk import Memory
from ai_memory_sdk.server import api, routes
from ai_memory_sdk.server.limits import ServerSettings
from ai_memory_sdk.server.request_ids import RequestIdFilter


@pytest.fixture
def client(ai_memory_server: ServeProcess, remote_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ai_memory_server.url, headers=headers(remote_key)) as c:
        yield c


def _error(r: httpx.Response, status: int, type_: str, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == type_, error
    for word in words:
        assert word in error["message"], error
    return str(error["message"])


# -- the schema -----------------------------------------------------------------------------------------


def test_openapi_describes_every_route_and_docs_render_it(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    for route in routes.router.routes:
        for method in getattr(route, "methods", ()):
            assert (method, route.path) in documented
            op = schema["paths"][route.path][method.lower()]
            assert op["summary"] and op["description"], route.path  # the engine method and what it does
            assert {"401", "404", "422"} <= set(op["responses"]), route.path
    assert {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} <= documented
    assert schema["components"]["schemas"]["ErrorBody"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger" in docs.text.lower()


# -- errors ---------------------------------------------------------------------------------------------


def test_bad_input_is_a_4xx_naming_what_was_wrong(client: httpx.Client) -> None:
    msgs = "/v1/subjects/u1/messages"
    _error(
        client.post(msgs, json={"messages": [{"role": "robot", "content": "x"}]}), 400, "ValueError", "messages[0].role"
    )
    _error(client.post(msgs, json={"messages": "hello"}), 422, "TypeError", "messages must be a list")
    _error(
        client.post(msgs, json={"messages": [{"role": "user", "content": "x", "colour": 1}]}),
        400,
        "ValueError",
        "colour",
    )
    _error(client.post(msgs, json={}), 422, "ValidationError", "body.messages")
    _error(client.post(msgs, content=b"{nope", headers={"content-type": "application/json"}), 422, "ValidationError")
    _error(
        client.post(msgs, json={"messages": [{"role": "user", "content": "x"}], "archive": "yes"}),
        422,
        "TypeError",
        "archive",
    )
    _error(client.put("/v1/subjects/u1/blocks/1bad", json={"description": "d"}), 400, "ValueError", "label")
    _error(
        client.put("/v1/subjects/u1/blocks/b", json={"description": "d", "limit": 0}), 400, "ValueError", "char_limit"
    )
    _error(
        client.put("/v1/subjects/u1/blocks/b", json={"description": "d", "value": "xx", "limit": 1}),
        400,
        "ValueError",
        "limit of 1",
    )
    _error(client.get("/v1/subjects/u1/messages", params={"limit": 0}), 400, "ValueError", "limit")
    _error(client.get("/v1/subjects/u1/messages", params={"limit": "ten"}), 422, "ValidationError", "query.limit")
    _error(client.get("/v1/subjects/u1/messages", params={"before": "yesterday"}), 400, "ValueError", "before")
    _error(client.get("/v1/subjects/u1/messages", params={"limit": 10**30}), 400, "ValueError")
    _error(client.get("/v1/subjects", params={"offset": -1}), 400, "ValueError", "offset")
    _error(client.get("/v1/subjects/u1/runs", params={"status": "done"}), 400, "ValueError", "status")
    _error(client.post("/v1/subjects/u1/search", json={"query": "  "}), 400, "ValueError", "query")
    _error(
        client.post("/v1/subjects/u1/search", json={"query": "x", "tag_match_mode": "most"}),
        400,
        "ValueError",
        "tag_match_mode",
    )
    _error(client.get("/v1/runs/r1/wait", params={"timeout": -1}), 400, "ValueError", "timeout")
    blocks = [{"label": "a", "description": "d"}, {"label": "a", "description": "e"}]
    _error(client.put("/v1/subjects/u2", json={"blocks": blocks}), 400, "ValueError", "blocks[1].label")
    r = client.request("PATCH", "/v1/subjects/u1/messages")
    _error(r, 405, "MethodNotAllowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}
    _error(client.get("/v1/subjects/%00x/blocks"), 400, "ValueError", "control characters")
    _error(client.get("/v1/subjects/" + "x" * 257), 400, "ValueError", "1-256")


def test_conflicts_and_unknown_ids(client: httpx.Client) -> None:
    created = client.put("/v1/subjects/u1", json={"blocks": []})
    assert created.status_code == 201
    r = client.put("/v1/subjects/u1", json={})
    _error(r, 409, "SubjectExistsError", "already exists")
    assert r.json()["error"]["agent_id"] == created.json()["agent_id"]
    run = client.post("/v1/subjects/u1/messages", json={"messages": [{"role": "user", "content": "hi"}]}).json()[
        "run_id"
    ]
    assert client.get(f"/v1/runs/{run}/wait").json()["status"] == "completed"
    _error(client.post(f"/v1/runs/{run}/cancel"), 409, "RunStateError", "only a queued run")
    _error(client.get("/v1/runs/run-nope"), 404, "RunNotFoundError")
    _error(client.get("/v1/subjects/u1/blocks/none"), 404, "BlockNotFoundError")
    _error(client.get("/v1/subjects/nobody/blocks/none"), 404, "SubjectNotFoundError")
    _error(client.post("/v1/subjects/u1/blocks/none/restore", json={"version": 1}), 404, "BlockNotFoundError")
    _error(client.delete("/v1/messages/msg-nope"), 404, api.MESSAGE_NOT_FOUND)


def test_ids_with_any_character_round_trip(ai_memory_server: ServeProcess, remote_key: str) -> None:
    ids = ["a/b", "a%2Fb", "..", ".", "100%", "with space", "ünïcødé", "?#&=", "alice@example.com", "a/../b"]
    with Memory(server_url=ai_memory_server.url, server_api_key=remote_key) as memory:
        runs = {
            sid: memory.add_messages(sid, [{"role": "user", "content": f"I live in {i}town"}], False)
            for i, sid in enumerate(ids)
        }
        for i, sid in enumerate(ids):
            memory.wait_for_run(runs[sid], timeout=30)
            assert memory.get_user_memory(sid) == f"Location: {i}town", sid
            assert memory.search(sid, f"{i}town") == [f"I live in {i}town"]
            assert [m.content for m in memory.get_messages(sid)] == [f"I live in {i}town"]
        assert {s.subject_id for s in memory._engine.list_subjects(query=None, offset=0, limit=50)} == set(ids)
        memory.delete_user("a/b")
        assert memory.get_user_memory("a/b") is None and memory.get_user_memory("a%2Fb") == "Location: 1town"


# -- limits ---------------------------------------------------------------------------------------------


def test_body_size_limit(tmp_path: Path) -> None:
    with ThreadServer(tmp_path / "m.db", ServerSettings(max_body_bytes=2000)) as server:
        auth = headers(server.key())
        big = {"messages": [{"role": "user", "content": "x" * 3000}]}
        r = httpx.post(f"{server.url}/v1/subjects/u/messages", json=big, headers=auth)
        _error(r, 413, "PayloadTooLarge", "2000 bytes")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = httpx.post(f"{server.url}/v1/subjects/u/messages", content=chunks(), headers=auth)
        _error(r, 413, "PayloadTooLarge")
        ok = httpx.post(
            f"{server.url}/v1/subjects/u/messages", json={"messages": [{"role": "user", "content": "hi"}]}, headers=auth
        )
        assert ok.status_code == 202
        with (
            Memory(server_url=server.url, server_api_key=auth["Authorization"][7:]) as memory,
            pytest.raises(ValueError, match="limit of 2000 bytes"),
        ):
            memory.add_messages("u", [{"role": "user", "content": "z" * 5000}])
        assert server.engine.get_messages("u", limit=None, before=None, after=None) == []  # nothing of either stored


def test_rate_limit_per_key(tmp_path: Path) -> None:
    with ThreadServer(tmp_path / "m.db", ServerSettings(rate=0.2, burst=3)) as server:
        one, two = server.key(), server.key()
        codes = [httpx.get(f"{server.url}/v1/subjects", headers=headers(one)).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        limited = httpx.get(f"{server.url}/v1/subjects", headers=headers(one))
        _error(limited, 429, "RateLimited", "0.2 requests/s")
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        assert httpx.get(f"{server.url}/v1/subjects", headers=headers(two)).status_code == 200  # another key


def test_the_remote_engine_waits_out_a_rate_limit(tmp_path: Path) -> None:
    with ThreadServer(tmp_path / "m.db", ServerSettings(rate=2, burst=1)) as server:
        with Memory(server_url=server.url, server_api_key=server.key()) as memory:
            t0 = time.monotonic()
            runs = [memory.add_messages(f"u{i}", [{"role": "user", "content": "hi"}]) for i in range(3)]
            assert time.monotonic() - t0 >= 1.0  # told to come back after 1 s (Retry-After is whole seconds)
        assert len(set(runs)) == 3
        assert sum(t.runs for t in server.engine.store.run_totals().values()) == 3  # each batch stored once


def test_long_polls_are_bounded(tmp_path: Path) -> None:
    settings = ServerSettings(max_long_polls=1)
    with ThreadServer(tmp_path / "m.db", settings, background=False) as server:  # nothing learns: runs stay queued
        auth = headers(server.key())
        run = httpx.post(
            f"{server.url}/v1/subjects/u/messages", json={"messages": [{"role": "user", "content": "hi"}]}, headers=auth
        ).json()["run_id"]
        held: dict[str, Any] = {}
        poll = threading.Thread(
            target=lambda: held.update(
                r=httpx.get(f"{server.url}/v1/runs/{run}/wait?timeout=3", headers=auth, timeout=10)
            )
        )
        poll.start()
        deadline = time.monotonic() + 5
        while server.state.long_polls.active < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.get(f"{server.url}/v1/runs/{run}/wait?timeout=3", headers=auth)
        _error(r, 503, "Overloaded", "long polls")
        assert r.headers["retry-after"] == "1"
        poll.join()
        assert held["r"].status_code == 200 and held["r"].json()["status"] == "queued"  # answered at its timeout
        assert server.state.long_polls.active == 0


# -- request ids, probes, metrics ---------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_request_id_is_echoed_logged_and_on_the_runs_log_lines(tmp_path: Path) -> None:
    records = _Records()
    logging.getLogger().addHandler(records)
    access = logging.getLogger("ai_memory_sdk.server.access")
    access.setLevel(logging.INFO)
    try:
        with ThreadServer(tmp_path / "m.db") as server:
            auth = headers(server.key())
            body = {"messages": [{"role": "user", "content": "hi"}]}  # a subject without blocks: the worker warns
            r = httpx.post(
                f"{server.url}/v1/subjects/bare/messages", json=body, headers={**auth, "X-Request-ID": "req-42"}
            )
            assert r.status_code == 202 and r.headers["x-request-id"] == "req-42"
            run = r.json()["run_id"]
            httpx.get(f"{server.url}/v1/runs/{run}/wait", headers=auth)
            generated = httpx.get(f"{server.url}/healthz").headers["x-request-id"]
            assert len(generated) == 32
            odd = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "evil\tid with spaces"})
            assert odd.headers["x-request-id"] != "evil\tid with spaces"
    finally:
        logging.getLogger().removeHandler(records)
        access.setLevel(logging.NOTSET)
    mine = [r for r in records.records if r.request_id == "req-42"]  # type: ignore[attr-defined]
    worker = [r for r in mine if r.name == "ai_memory_sdk.worker"]
    assert worker and run in worker[0].getMessage() and "no blocks" in worker[0].getMessage()
    line = [r.getMessage() for r in mine if r.name == "ai_memory_sdk.server.access"]
    assert line and f"run={run}" in line[0] and '"POST /v1/subjects/bare/messages" 202' in line[0]


def test_healthz_readyz_and_metrics(tmp_path: Path) -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127}
    with ScriptedOpenAI() as llm:
        llm.responder = lambda req: reply(
            tool_calls=[("memory_insert", {"label": "human", "new_str": "Name: Bo"}), ("memory_finish_edits", {})],
            usage=usage,
        )
        llm.script_embeddings(*[fail(400)] * 20)  # the embedder fails: counted, the run still completes
        options = {
            "learner": "llm",
            "llm_base_url": llm.base_url,
            "llm_api_key": "sk-x",
            "embedder": "openai:text-embedding-3-small",
        }
        with ThreadServer(tmp_path / "m.db", **options) as server:
            assert httpx.get(f"{server.url}/healthz").status_code == 200
            auth = headers(server.key())
            ready = httpx.get(f"{server.url}/readyz", headers=auth)
            assert ready.status_code == 200 and ready.json()["checks"] == {"store": "ok", "workers": "ok"}
            with Memory(server_url=server.url, server_api_key=auth["Authorization"][7:]) as memory:
                run = memory.add_messages("bo", [{"role": "user", "content": "I am Bo"}], skip_vector_storage=False)
                memory.wait_for_run(run, timeout=60)
                memory.get_context("bo")
                memory.get_context("nobody")
            text = httpx.get(f"{server.url}/metrics", headers=auth).text
    samples = _samples(text)
    route = 'method="POST",route="/v1/subjects/{subject_id}/messages",status="202"'
    assert samples[f"ai_memory_http_requests_total{{{route}}}"] == 1
    assert (
        samples['ai_memory_http_requests_total{method="GET",route="/v1/subjects/{subject_id}/blocks",status="404"}']
        == 1
    )
    assert samples['ai_memory_http_request_duration_seconds_count{method="GET",route="/v1/runs/{run_id}/wait"}'] >= 1
    assert samples['ai_memory_runs{status="completed"}'] == 1 and samples['ai_memory_runs{status="queued"}'] == 0
    assert samples["ai_memory_queue_depth"] == 0
    assert samples["ai_memory_llm_calls"] == 1
    assert (
        samples['ai_memory_llm_tokens{type="prompt"}'] == 120
        and samples['ai_memory_llm_tokens{type="completion"}'] == 7
    )
    assert samples["ai_memory_embedder_errors_total"] >= 1
    assert samples["ai_memory_store_up"] == 1 and samples["ai_memory_workers"] == 4


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_readyz_names_what_is_not_ready(tmp_path: Path) -> None:
    with ThreadServer(tmp_path / "m.db") as server:
        auth = headers(server.key())
        server.engine.pool.stop(timeout=5)  # the workers died
        r = httpx.get(f"{server.url}/readyz", headers=auth)
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"store": "ok", "workers": "not running"}}
    with ThreadServer(tmp_path / "m.db", background=False) as server:  # serve --workers 0: others learn
        auth = headers(server.key())
        assert httpx.get(f"{server.url}/readyz", headers=auth).status_code == 200
        server.engine.store.close()  # the store is gone: key checks and readiness say so, no 500
        r = httpx.get(f"{server.url}/readyz", headers=auth)
        assert r.status_code == 503 and r.json()["error"]["type"] == "StoreError"
        assert r.headers["retry-after"] == "1"


def test_metrics_route_labels_are_templates(ai_memory_server: ServeProcess, client: httpx.Client) -> None:
    for i in range(3):
        client.get(f"/v1/subjects/someone-{i}/blocks")
    text = client.get("/metrics").text
    assert "someone-" not in text
    assert json.dumps("/v1/subjects/{subject_id}/blocks")[1:-1] in text
