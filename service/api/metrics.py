"""Request counters and latency histograms, exposed by `prometheus_client` in the text format 0.0.4.

The counts live here, and a custom collector hands them to the library at each scrape, for two reasons:
each app gets its own registry (tests build many apps in one process; the library's default registry is
global), and the exposition stays what it has always been: no `_created` series, and bucket bounds
written as `le="1"`, not the library's `le="1.0"`, so dashboards and recording rules keep matching.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Counts of requests by (method, route, status) and their latency by (method, route)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sum: dict[tuple[str, str], float] = defaultdict(float)
        self._count: dict[tuple[str, str], int] = defaultdict(int)
        self._sources: list[Callable[[], list[Metric]]] = []

    def add_source(self, source: Callable[[], list[Metric]]) -> None:
        """Families another part of the app reports at each scrape (the job cache's hits and misses)."""
        self._sources.append(source)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            key = (method, route)
            buckets = self._buckets[key]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._sum[key] += seconds
            self._count[key] += 1

    def render(self, *, jobs_by_status: Mapping[str, int] | None, queue_depth: int | None) -> str:
        """The exposition of one scrape; None for what did not answer it (the store, the broker)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Scrape(self._families(), jobs_by_status=jobs_by_status, queue_depth=queue_depth))
        return generate_latest(registry).decode()

    def _families(self) -> list[Metric]:
        requests = CounterMetricFamily(
            "parry_http_requests_total",
            "HTTP requests by method, route template and status.",
            labels=("method", "route", "status"),
        )
        latency = HistogramMetricFamily(
            "parry_http_request_duration_seconds",
            "HTTP request latency by method and route.",
            labels=("method", "route"),
        )
        with self._lock:
            for labels, n in sorted(self._requests.items()):
                requests.add_metric(labels, n)
            for (method, route), buckets in sorted(self._buckets.items()):
                count = self._count[(method, route)]
                bounds = [(f"{bound:g}", float(n)) for bound, n in zip(BUCKETS, buckets, strict=True)]
                latency.add_metric(
                    (method, route), [*bounds, ("+Inf", float(count))], round(self._sum[(method, route)], 6)
                )
        return [requests, latency, *(family for source in self._sources for family in source())]


class _Scrape(Collector):
    """The request metrics, then what this scrape found in the store and the broker."""

    def __init__(
        self, requests: list[Metric], *, jobs_by_status: Mapping[str, int] | None, queue_depth: int | None
    ) -> None:
        self._requests = requests
        self._jobs = jobs_by_status
        self._depth = queue_depth

    def collect(self) -> Iterator[Metric]:
        yield from self._requests
        if self._jobs is not None:
            jobs = GaugeMetricFamily("parry_jobs", "Jobs in the store by status.", labels=("status",))
            for status, n in sorted(self._jobs.items()):
                jobs.add_metric((status,), n)
            yield jobs
        if self._depth is not None:
            yield GaugeMetricFamily(
                "parry_queue_depth", "Task messages waiting in the broker queue.", value=self._depth
            )
        yield GaugeMetricFamily(
            "parry_store_up", "Whether the job store answered this scrape.", value=int(self._jobs is not None)
        )
        yield GaugeMetricFamily(
            "parry_broker_up", "Whether the broker answered this scrape.", value=int(self._depth is not None)
        )


class MetricsMiddleware:
    """Times every HTTP request and labels it with its route template (`/v1/jobs/{job_id}`), not its path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)
