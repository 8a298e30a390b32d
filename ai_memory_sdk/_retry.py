"""Retrying transient endpoint failures: one helper for the memory agent's LLM calls and for embeddings.

A caller opens one ``RetryBudget`` per unit of work (a learner pass, an embedding
request). Failed attempts and the waits between them together last at most the
budget's seconds; the wait before each retry doubles from 0.5 s up to 20 s, with
jitter, unless the server asks for a wait (``retry-after-ms``, ``Retry-After`` in
seconds or as an HTTP date). The first retry of a budget logs one WARNING naming
the endpoint and the cause, so a wrong URL is visible at once rather than after
minutes of silent retrying; later retries log at INFO.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any

BACKOFF_FIRST = 0.5  # seconds before the first retry when the server names no wait; doubles per retry
BACKOFF_CAP = 20.0
_RETRY_AFTER_JITTER = 0.1  # up to 10% (at most 1 s) added to a server's wait, so clients do not return in step
_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx


class Transient(Exception):
    """A failure worth retrying. ``reason`` completes "<endpoint> ..." (e.g. ``unreachable (Connection refused)``);
    ``retry_after`` is the server's wish in seconds, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def retry_after(response: Any) -> float | None:
    """Seconds to wait from a response's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def root_cause(exc: BaseException) -> str:
    """The innermost cause of an exception in words: ``Connection refused`` rather than ``Connection error.``."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def status_message(exc: Any) -> str:
    """The server's own error message of an ``openai.APIStatusError`` (OpenAI, vLLM and Ollama bodies)."""
    body = getattr(exc, "body", None)  # the client has already taken the body's "error" member when there is one
    if isinstance(body, str) and body:
        return body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
    return str(getattr(exc, "message", None) or exc)


def openai_transient(exc: BaseException) -> Transient | None:
    """Why an ``openai`` client exception is worth retrying, or None when retrying cannot help."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Transient("timed out")
    if isinstance(exc, openai.APIConnectionError):
        return Transient(f"unreachable ({root_cause(exc)})")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else None
        code = body.get("code") if isinstance(body, dict) else None
        if (status in _TRANSIENT_STATUS or status >= 500) and code != "insufficient_quota":
            return Transient(f"answered HTTP {status}: {status_message(exc)}", retry_after(exc.response))
        return None
    if isinstance(exc, (ValueError, openai.APIResponseValidationError)):  # JSONDecodeError is a ValueError
        return Transient(f"sent an invalid response ({type(exc).__name__}: {exc})")
    return None


class RetryBudget:
    """Retries of one unit of work against ``endpoint`` (e.g. ``LLM endpoint http://host/v1``)."""

    def __init__(self, seconds: float, endpoint: str, logger: logging.Logger) -> None:
        self.seconds = seconds
        self.endpoint = endpoint
        self.spent = 0.0
        self.failures = 0
        self.errors: list[str] = []  # each failed attempt's reason, in order (for traces)
        self._log = logger

    def pause(self, err: Transient, attempt_seconds: float) -> bool:
        """Sleep before the next attempt and return True; False (no sleep) when the budget would be exceeded."""
        self.spent += attempt_seconds
        self.failures += 1
        self.errors.append(err.reason)
        delay = self.delay(err)
        if self.spent + delay > self.seconds:
            return False
        if self.failures == 1:
            self._log.warning("%s %s; retrying for up to %g s", self.endpoint, err.reason, self.seconds)
        else:
            self._log.info("%s %s; retry %d in %.2f s", self.endpoint, err.reason, self.failures, delay)
        time.sleep(delay)
        self.spent += delay
        return True

    def delay(self, err: Transient) -> float:
        """Seconds to wait after the ``failures``-th failure: the server's wish plus a little, else backoff."""
        if err.retry_after is not None:
            return err.retry_after + random.uniform(0, min(1.0, err.retry_after * _RETRY_AFTER_JITTER))
        backoff: float = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** min(max(0, self.failures - 1), 16))
        return backoff * random.uniform(0.5, 1.0)

    def gave_up(self, err: Transient) -> str:
        """The final error text once ``pause`` returned False."""
        wish = f"; the server asked to wait {err.retry_after:g}s" if err.retry_after is not None else ""
        return (
            f"{self.endpoint} {err.reason} (gave up after {self.failures} failed attempt(s) in {self.spent:.1f}s;"
            f" retry budget {self.seconds:g}s{wish})"
        )
