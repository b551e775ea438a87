"""Request counters and latency histograms, rendered in the Prometheus text format (version 0.0.4).

Hand-written to keep the API's dependencies small: a few counters under a lock are all it needs.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Counts of requests by (method, route, status) and their latency by (method, route)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sum: dict[tuple[str, str], float] = defaultdict(float)
        self._count: dict[tuple[str, str], int] = defaultdict(int)

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
        lines = [
            "# HELP parry_http_requests_total HTTP requests by method, route template and status.",
            "# TYPE parry_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(
                    f"parry_http_requests_total{_labels(method=method, route=route, status=status)} {n}"
                )
            lines += [
                "# HELP parry_http_request_duration_seconds HTTP request latency by method and route.",
                "# TYPE parry_http_request_duration_seconds histogram",
            ]
            for (method, route), buckets in sorted(self._buckets.items()):
                for bound, n in zip(BUCKETS, buckets, strict=True):
                    labels = _labels(method=method, route=route, le=f"{bound:g}")
                    lines.append(f"parry_http_request_duration_seconds_bucket{labels} {n}")
                count = self._count[(method, route)]
                labels = _labels(method=method, route=route, le="+Inf")
                lines.append(f"parry_http_request_duration_seconds_bucket{labels} {count}")
                base = _labels(method=method, route=route)
                lines.append(
                    f"parry_http_request_duration_seconds_sum{base} {self._sum[(method, route)]:.6f}"
                )
                lines.append(f"parry_http_request_duration_seconds_count{base} {count}")
        if jobs_by_status is not None:
            lines += ["# HELP parry_jobs Jobs in the store by status.", "# TYPE parry_jobs gauge"]
            for status, n in sorted(jobs_by_status.items()):
                lines.append(f"parry_jobs{_labels(status=status)} {n}")
        if queue_depth is not None:
            lines += [
                "# HELP parry_queue_depth Task messages waiting in the broker queue.",
                "# TYPE parry_queue_depth gauge",
                f"parry_queue_depth {queue_depth}",
            ]
        up = 1 if jobs_by_status is not None else 0
        lines += [
            "# HELP parry_store_up Whether the job store answered this scrape.",
            "# TYPE parry_store_up gauge",
            f"parry_store_up {up}",
            "# HELP parry_broker_up Whether the broker answered this scrape.",
            "# TYPE parry_broker_up gauge",
            f"parry_broker_up {1 if queue_depth is not None else 0}",
        ]
        return "\n".join(lines) + "\n"


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
