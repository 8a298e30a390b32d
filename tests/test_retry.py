"""One retry helper for LLM calls and embeddings: backoff, Retry-After, and one WARNING that names the endpoint."""

from __future__ import annotations

import email.utils
import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import openai
import pytest
from support.openai_server import ScriptedOpenAI, fail, reply

from ai_memory_sdk import Memory
from ai_memory_sdk._retry import BACKOFF_CAP, BACKOFF_FIRST, RetryBudget, Transient, retry_after
from ai_memory_sdk.errors import RunFailedError
from ai_memory_sdk.search.embedders import EmbedderError, OpenAIEmbedder

FINISH = ("memory_finish_edits", {})


@pytest.fixture
def closed_url() -> str:
    """The base URL of a port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def make(tmp_path) -> Iterator[Callable[..., Memory]]:
    made: list[Memory] = []

    def build(base_url: str, **options: Any) -> Memory:
        m = Memory(
            path=str(tmp_path / "m.db"),
            learner="llm",
            llm_base_url=base_url,
            llm_api_key="sk-test",
            embedder="none",
            **options,
        )
        made.append(m)
        return m

    yield build
    for m in made:
        m.close()


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


def _retries(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.INFO]


def _embedder(url: str, budget: float = 1.5) -> OpenAIEmbedder:
    return OpenAIEmbedder(
        "text-embedding-3-small",
        lambda: openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0, timeout=5),
        retry_budget=budget,
    )


def test_retry_after_header_forms() -> None:
    def wait(headers: dict[str, str]) -> Any:
        return retry_after(httpx.Response(429, headers=headers))

    assert wait({"Retry-After": "3"}) == 3.0 and wait({"Retry-After": "0.5"}) == 0.5
    assert wait({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    date = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 28 <= wait({"Retry-After": date}) <= 30
    assert wait({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past: no wait
    assert wait({"Retry-After": "soon"}) is None and wait({}) is None


def test_backoff_doubles_from_half_a_second_to_a_20_second_cap_with_jitter() -> None:
    budget = RetryBudget(1000, "LLM endpoint x", logging.getLogger("test"))
    plain = Transient("answered HTTP 503: busy")
    for failures, full in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 20.0), (30, 20.0)]:
        budget.failures = failures
        delays = [budget.delay(plain) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays), (failures, min(delays), max(delays))
        assert max(delays) - min(delays) > 0  # jittered
    assert BACKOFF_FIRST == 0.5 and BACKOFF_CAP == 20.0
    asked = [budget.delay(Transient("answered HTTP 429", retry_after=4.0)) for _ in range(50)]
    assert all(4.0 <= d <= 4.4 for d in asked)  # the server's wish, plus at most 10%


def test_a_budget_gives_up_before_waiting_past_it() -> None:
    budget = RetryBudget(2.0, "LLM endpoint http://h/v1", logging.getLogger("test"))
    err = Transient("answered HTTP 429: slow down", retry_after=30.0)
    started = time.monotonic()
    assert budget.pause(err, 0.1) is False and time.monotonic() - started < 0.5  # no pointless sleep
    text = budget.gave_up(err)
    assert text.startswith("LLM endpoint http://h/v1 answered HTTP 429: slow down (gave up after 1 failed attempt")
    assert "retry budget 2s; the server asked to wait 30s" in text


def test_an_unreachable_llm_endpoint_warns_once_naming_url_and_cause(make, closed_url, caplog) -> None:
    mem = make(closed_url, llm_retry_budget=2.0)
    with caplog.at_level(logging.INFO, logger="ai_memory_sdk.learners.llm"):
        started = time.monotonic()
        run = mem.add_messages("u1", [{"role": "user", "content": "hi"}])
        with pytest.raises(RunFailedError) as err:
            mem.wait_for_run(run, timeout=20)
    assert time.monotonic() - started < 10
    (warning,) = _warnings(caplog, "ai_memory_sdk.learners.llm")
    assert warning == f"LLM endpoint {closed_url} unreachable (Connection refused); retrying for up to 2 s"
    assert len(_retries(caplog, "ai_memory_sdk.learners.llm")) >= 1  # later retries at INFO
    assert f"LLM endpoint {closed_url} unreachable (Connection refused) (gave up after" in str(err.value)
    assert err.value.run.stop_reason == "llm_error"


def test_a_flaky_llm_endpoint_warns_once_then_the_pass_succeeds(make, openai_server: ScriptedOpenAI, caplog) -> None:
    mem = make(openai_server.base_url, llm_retry_budget=30.0)
    openai_server.script(
        fail(503),
        fail(503),
        fail(502),
        reply(tool_calls=[("memory_insert", {"label": "human", "new_str": "ok"}), FINISH]),
    )
    with caplog.at_level(logging.INFO, logger="ai_memory_sdk.learners.llm"):
        mem.wait_for_run(mem.add_messages("u2", [{"role": "user", "content": "hi"}]), timeout=30)
    assert mem.get_user_memory("u2") == "ok" and len(openai_server.chat_requests) == 4
    (warning,) = _warnings(caplog, "ai_memory_sdk.learners.llm")
    assert warning.startswith(f"LLM endpoint {openai_server.base_url} answered HTTP 503: Scripted error 503;")
    assert warning.endswith("retrying for up to 30 s")
    retries = _retries(caplog, "ai_memory_sdk.learners.llm")
    assert [r.split("; retry ")[1][:1] for r in retries if "; retry " in r] == ["2", "3"]


def test_an_unreachable_embedder_names_itself_and_its_url(closed_url, caplog) -> None:
    embedder = _embedder(closed_url, budget=1.5)
    with caplog.at_level(logging.INFO, logger="ai_memory_sdk.search.embedders"), pytest.raises(EmbedderError) as err:
        embedder.embed(["hello", "world"])
    text = str(err.value)
    assert text.startswith(f"embedder openai:text-embedding-3-small at {closed_url} unreachable (Connection refused)")
    assert "Connection error." not in text and "retry budget 1.5s" in text
    (warning,) = _warnings(caplog, "ai_memory_sdk.search.embedders")
    assert warning == (
        f"embedder openai:text-embedding-3-small at {closed_url} unreachable (Connection refused);"
        " retrying for up to 1.5 s"
    )


def test_embedding_retries_honour_retry_after_ms_and_warn_once(openai_server: ScriptedOpenAI, caplog) -> None:
    openai_server.script_embeddings(
        fail(429, headers={"retry-after-ms": "300", "Retry-After": "9"}), fail(500), fail(503)
    )
    with caplog.at_level(logging.INFO, logger="ai_memory_sdk.search.embedders"):
        rows = _embedder(openai_server.base_url, budget=20).embed(["a b c"] * 3)
    assert rows.shape == (3, openai_server.embedding_dim)
    times = [r.time for r in openai_server.embedding_requests]
    assert len(times) == 4 and 0.3 <= times[1] - times[0] < 1.5  # 300 ms asked (not 9 s), plus jitter
    assert len(_warnings(caplog, "ai_memory_sdk.search.embedders")) == 1
    assert len(_retries(caplog, "ai_memory_sdk.search.embedders")) == 2


def test_a_fresh_embed_call_has_a_fresh_budget_and_warns_again(openai_server: ScriptedOpenAI, caplog) -> None:
    embedder = _embedder(openai_server.base_url, budget=5)
    with caplog.at_level(logging.INFO, logger="ai_memory_sdk.search.embedders"):
        for _ in range(2):
            openai_server.script_embeddings(fail(503))
            assert embedder.embed(["x"]).shape[0] == 1
    assert len(_warnings(caplog, "ai_memory_sdk.search.embedders")) == 2
