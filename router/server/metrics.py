"""``GET /metrics``: what the gateway did, in Prometheus' text format (``prometheus_client``).

One registry per server (not the process-global one), so tests and embedded servers never share
counters. Cost and baseline are counters in USD: ``rate(hybridgate_cost_usd_total[5m])`` next to
``rate(hybridgate_baseline_cost_usd_total[5m])`` is a live savings panel. Label values are kept
to small sets: the reason is cut at its first ``(`` or ``>=``/``<`` (``score>=0.80`` -> ``score``).
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_REASON_CUT = re.compile(r"[(<>=]")


def reason_kind(reason: str) -> str:
    """``rule:forced_local(tag:pii)`` -> ``rule:forced_local``; ``score>=0.80`` -> ``score``."""
    return _REASON_CUT.split(reason, maxsplit=1)[0] or "none"


class ServerMetrics:
    """The server's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hybridgate_requests",
            "Chat completion requests, by where they were answered and how they ended.",
            ["route", "reason", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hybridgate_request_duration_seconds",
            "End-to-end request time in the server (for streams: until the last chunk).",
            ["route", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "hybridgate_time_to_first_token_seconds",
            "Streams: seconds from the request to the first content chunk.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "hybridgate_local_queue_wait_seconds",
            "Seconds a local request waited before it joined the running batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "hybridgate_tokens", "Tokens, by route and kind.", ["route", "kind"], registry=r
        )
        self.cost = Counter(
            "hybridgate_cost_usd",
            "USD spent (local compute + cloud), by route.",
            ["route"],
            registry=r,
        )
        self.baseline = Counter(
            "hybridgate_baseline_cost_usd",
            "USD the same requests would have cost all-cloud.",
            registry=r,
        )
        self.cache_hits = Counter(
            "hybridgate_cache_hits", "Answers served from the cache.", registry=r
        )
        self.escalations = Counter(
            "hybridgate_escalations", "Local answers escalated to the cloud.", registry=r
        )
        self.errors = Counter(
            "hybridgate_errors", "Failed requests, by error type.", ["type"], registry=r
        )
        self.disconnects = Counter(
            "hybridgate_client_disconnects", "Streams the client left before the end.", registry=r
        )
        self.in_flight = Gauge(
            "hybridgate_requests_in_flight", "Requests being served now.", registry=r
        )
        self.queue_depth = Gauge(
            "hybridgate_local_queue_depth", "Local requests waiting to join the batch.", registry=r
        )
        self.expected_wait = Gauge(
            "hybridgate_local_expected_wait_seconds",
            "Seconds a local request queued now would wait for a batch slot (at the throughput "
            "measured while requests wait; what local.max_queue_wait_s compares).",
            registry=r,
        )
        self.batch_rows = Gauge(
            "hybridgate_local_batch_size", "Rows in the running local batch.", registry=r
        )
        self.adapter = Info("hybridgate_adapter", "The local LoRA adapter serving now.", registry=r)
        self._local: Any = None

    def watch_local(self, local: Any) -> None:
        """Read queue depth and batch size from this local transport at every scrape."""
        batcher = getattr(local, "batcher", None)
        if batcher is None:
            return
        self._local = local
        batcher.observe_wait = self.queue_wait.observe
        self.queue_depth.set_function(lambda: batcher.queue_depth)
        if hasattr(batcher, "expected_wait_s"):  # NaN until measured under load
            self.expected_wait.set_function(
                lambda: float("nan") if (w := batcher.expected_wait_s()) is None else w
            )
        self.batch_rows.set_function(lambda: batcher.running_rows)

    def watch_cache(self, cache: Any) -> None:
        """Export the cache store's failures (a Redis outage: requests served uncached)."""
        if cache is not None and hasattr(cache, "store_errors"):
            self.registry.register(_CacheStoreErrors(cache))

    def answered(self, info: Any, *, stream: bool, seconds: float) -> None:
        """Count one answered request from its ``RouteInfo``."""
        route = info.route
        self.requests.labels(route, reason_kind(info.reason), "ok").inc()
        self.latency.labels(route, str(stream).lower()).observe(seconds)
        self.cost.labels(route).inc(max(info.cost_usd, 0.0))
        self.baseline.inc(max(info.baseline_cost_usd, 0.0))
        if info.cache_hit:
            self.cache_hits.inc()
        if info.escalated:
            self.escalations.inc()

    def usage(self, route: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens.labels(route, "prompt").inc(prompt_tokens)
        self.tokens.labels(route, "completion").inc(completion_tokens)

    def failed(self, error_type: str, status: int, route: str = "none") -> None:
        self.requests.labels(route, "error", str(status)).inc()
        self.errors.labels(error_type).inc()

    def render(self, adapter_version: str | None) -> bytes:
        self.adapter.info({"version": adapter_version or "base"})
        return generate_latest(self.registry)


class _CacheStoreErrors:
    """A counter read from the cache at scrape time (the store counts, not the server)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def collect(self) -> Any:
        yield CounterMetricFamily(
            "hybridgate_cache_store_errors",
            "Cache store calls that failed (each served as a miss; Redis down or unreachable).",
            value=self.cache.store_errors,
        )


__all__ = ["ServerMetrics", "reason_kind"]
