"""``/metrics``: Prometheus text about this process's requests and the store's runs.

Per process (counters and histograms, summed across processes by the query):
requests by route template and status, their latency, long polls held, and
embedding failures of this process's workers. Per store (gauges read at
scrape time with one query, the same from every process sharing the store):
runs by status, the queue depth, and the LLM calls and tokens recorded on
the runs. Route labels are templates (``/v1/runs/{run_id}``), never raw paths,
so the number of series stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..engines.local import LocalEngine
from ..models import RunStatus
from .limits import LongPolls

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES: tuple[RunStatus, ...] = ("queued", "running", "completed", "failed", "cancelled")
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The registry of one app: request metrics observed by the gateway, store metrics collected on scrape."""

    def __init__(self, engine: LocalEngine, long_polls: LongPolls) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "ai_memory_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "ai_memory_http_request_duration_seconds",
            "Time from a request's arrival to its response's end, by method and route template",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine, long_polls))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The exposition text (reads the store: call it off the event loop)."""
        return bytes(generate_latest(self.registry))


class _EngineCollector(Collector):
    def __init__(self, engine: LocalEngine, long_polls: LongPolls) -> None:
        self.engine = engine
        self.long_polls = long_polls

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ai_memory_store_up", "1 when the store answered this scrape's query, else 0")
        try:
            totals = self.engine.store.run_totals()
        except Exception as exc:  # a scrape reports the store down rather than failing
            log.warning("metrics: the store did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            runs = GaugeMetricFamily("ai_memory_runs", "Runs in the store by status (all tenants)", labels=["status"])
            for status in _STATUSES:
                runs.add_metric([status], totals[status].runs if status in totals else 0)
            yield runs
            queued = totals.get("queued")
            yield GaugeMetricFamily(
                "ai_memory_queue_depth",
                "Runs queued and not yet claimed by a worker",
                value=queued.runs if queued else 0,
            )
            yield GaugeMetricFamily(
                "ai_memory_llm_calls",
                "LLM calls recorded on the store's runs",
                value=sum(t.llm_calls for t in totals.values()),
            )
            tokens = GaugeMetricFamily(
                "ai_memory_llm_tokens", "LLM tokens recorded on the store's runs", labels=["type"]
            )
            tokens.add_metric(["prompt"], sum(t.prompt_tokens for t in totals.values()))
            tokens.add_metric(["completion"], sum(t.completion_tokens for t in totals.values()))
            yield tokens
        errors = CounterMetricFamily(
            "ai_memory_embedder_errors", "Embedding attempts of this process's workers that failed"
        )
        errors.add_metric([], self.engine.indexer.failures)
        yield errors
        workers = GaugeMetricFamily("ai_memory_workers", "Worker threads learning in this process")
        workers.add_metric([], self.engine.settings.workers if self.engine.pool.running else 0)
        yield workers
        yield GaugeMetricFamily("ai_memory_long_polls", "wait requests held now", value=self.long_polls.active)
