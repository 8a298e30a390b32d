"""The server's limits: body size, a request rate per key, and a bound on concurrent long polls.

The rate limiter and the long-poll count live in this process (a token bucket
per tenant): with several ``serve`` processes behind a load balancer, each
allows its own rate, so a tenant's total is at most the rate times the number
of processes. Nothing here needs to be shared for correctness.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .api import LONG_POLL_SECONDS


@dataclass(frozen=True)
class ServerSettings:
    """Limits and sizes of one server process (``ai-memory serve --help`` names each option)."""

    max_body_bytes: int = 16 * 1024 * 1024
    """A request body above this gets 413 (``PayloadTooLarge``)."""
    rate: float = 200.0
    """Requests per second allowed to one key (tenant), on average; 0 turns the limit off."""
    burst: int = 400
    """Requests one key may make at once above ``rate`` (the bucket's size)."""
    max_long_polls: int = 256
    """``wait`` requests held at once; one more gets 503 (``Overloaded``) with ``Retry-After``."""
    long_poll_seconds: float = LONG_POLL_SECONDS
    """The longest one ``wait`` request is held; the client asks again until its own timeout."""
    threads: int = 64
    """Threads that run handlers (store calls); long polls have their own, ``max_long_polls`` of them."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "burst", "max_long_polls", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not math.isfinite(self.rate) or self.rate < 0:
            raise ValueError(f"rate must be a number of requests per second (0: no limit), got {self.rate!r}")
        if not math.isfinite(self.long_poll_seconds) or self.long_poll_seconds <= 0:
            raise ValueError(f"long_poll_seconds must be a positive number, got {self.long_poll_seconds!r}")


class RateLimiter:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate`` per second. Used from the event loop only."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """Spend a token of ``key``: 0.0 if there was one, else the seconds until there will be."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


class LongPolls:
    """How many ``wait`` requests are held now, against a bound. Used from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
