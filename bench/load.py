"""Bounded load on loopback: concurrent clients submit small evaluations and poll them; errors and latency.

Each client is its own `httpx.AsyncClient` (its own connections). It submits an FGSM evaluation of
`--max-samples` samples, polls `GET /v1/jobs/{id}` every `--poll-s` until the job ends, and starts over,
until `--seconds` have passed or it has submitted `--jobs-per-client` jobs; it reads every job at least
once (a result answered from the cache is read back too). Seeds cycle over `--seeds`
values, so most submissions after the first few are answered from the result cache and the load falls on
the API and the database rather than on the worker's CPU. Then the jobs still unfinished are polled until
they end (at most `--drain-s`). An error is a connection error, a timeout, a 5xx, or any unexpected status;
a job that ends anything but `succeeded` counts too. Prints figures; never passes or fails on time.

    python bench/load.py [--clients 50] [--seconds 60]    # starts its own redis-server, API and worker
    python bench/load.py --url http://127.0.0.1:8000 --model-id mdl_...   # against a running service
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class LoadReport:
    """What a load run saw: per-request latencies by kind, errors, and how the jobs ended."""

    clients: int
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"submit": [], "poll": []})
    errors: list[str] = field(default_factory=list)
    jobs: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def percentile(self, q: float, kind: str | None = None) -> float:
        values = sorted(self.latencies[kind] if kind else [t for v in self.latencies.values() for t in v])
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]

    def summary(self) -> str:
        lines = [
            f"{self.clients} clients, {self.seconds:.1f} s, {self.requests} requests "
            f"({self.requests / max(self.seconds, 1e-9):.0f} req/s), {len(self.errors)} errors",
            "jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(self.jobs.items())),
        ]
        for kind in (*self.latencies, None):
            if kind is None or self.latencies[kind]:
                name = kind or "all"
                count = len(self.latencies[kind]) if kind else self.requests
                lines.append(
                    f"{name:>6}: n={count} p50 {self.percentile(0.5, kind) * 1000:.1f} ms, "
                    f"p95 {self.percentile(0.95, kind) * 1000:.1f} ms, "
                    f"p99 {self.percentile(0.99, kind) * 1000:.1f} ms, "
                    f"max {self.percentile(1.0, kind) * 1000:.1f} ms"
                )
        lines += [f"error: {e}" for e in self.errors[:10]]
        return "\n".join(lines)


async def _request(
    report: LoadReport, kind: str, client: httpx.AsyncClient, method: str, url: str, ok: set[int], **kw: Any
) -> dict[str, Any] | None:
    start = time.perf_counter()
    try:
        response = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        report.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
        return None
    report.latencies[kind].append(time.perf_counter() - start)
    if response.status_code not in ok:
        report.errors.append(f"{method} {url}: {response.status_code} {response.text[:200]}")
        return None
    body: dict[str, Any] = response.json()
    return body


async def _client(
    index: int,
    report: LoadReport,
    base_url: str,
    spec: dict[str, Any],
    *,
    deadline: float,
    drain_until: float,
    poll_s: float,
    jobs_per_client: int,
    seeds: int,
    headers: dict[str, str],
) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        for n in range(jobs_per_client):
            if time.monotonic() >= deadline:
                return
            body = {**spec, "seed": (index + n) % seeds}
            job = await _request(report, "submit", client, "POST", "/v1/evaluations", {200, 202}, json=body)
            if job is None:
                continue
            status = job["status"]
            while True:  # read the job at least once, as a client reading its result does
                if status not in TERMINAL:
                    await asyncio.sleep(poll_s)
                polled = await _request(report, "poll", client, "GET", f"/v1/jobs/{job['id']}", {200})
                status = polled["status"] if polled is not None else status
                if status in TERMINAL:
                    break
                if time.monotonic() >= drain_until:
                    status = "unfinished"
                    break
            report.jobs[status] += 1
            if status != "succeeded":
                report.errors.append(f"job {job['id']} ended {status}")


async def run_load(
    base_url: str,
    model_id: str,
    *,
    clients: int = 50,
    seconds: float = 60.0,
    drain_s: float = 60.0,
    poll_s: float = 0.2,
    jobs_per_client: int = 1000,
    max_samples: int = 20,
    seeds: int = 8,
    api_key: str | None = None,
) -> LoadReport:
    """Run the load described in the module docstring against `base_url`; the report of what happened."""
    if httpx.URL(base_url).host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the load test runs on loopback only")
    spec = {
        "model_id": model_id,
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "fgsm", "eps": 0.1}],
        "max_samples": max_samples,
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    report = LoadReport(clients=clients)
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(
        *(
            _client(
                i,
                report,
                base_url,
                spec,
                deadline=deadline,
                drain_until=deadline + drain_s,
                poll_s=poll_s,
                jobs_per_client=jobs_per_client,
                seeds=seeds,
                headers=headers,
            )  # fmt: skip
            for i in range(clients)
        )
    )
    report.seconds = time.monotonic() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--drain-s", type=float, default=60.0)
    parser.add_argument("--poll-s", type=float, default=0.2)
    parser.add_argument("--max-samples", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--url", help="a running service on loopback (default: start one)")
    parser.add_argument("--model-id", help="with --url: a ready model taking 28x28x1 inputs")
    parser.add_argument("--api-key", default=os.environ.get("PARRY_BENCH_API_KEY"))
    args = parser.parse_args()
    options = {
        "clients": args.clients, "seconds": args.seconds, "drain_s": args.drain_s, "poll_s": args.poll_s,
        "max_samples": args.max_samples, "seeds": args.seeds, "api_key": args.api_key,
    }  # fmt: skip
    if args.url:
        if not args.model_id:
            parser.error("--url needs --model-id")
        print(asyncio.run(run_load(args.url, args.model_id, **options)).summary())  # noqa: T201
        return

    sys.path.insert(0, str(ROOT))  # run as a script: `bench` is importable from the repository root
    from bench.stack import stack, tiny_keras_model

    with stack("parry-load-") as service:
        service.start()
        service.start_workers([None])
        model_id = service.upload_model(tiny_keras_model(service.work / "tiny.keras"))
        options["api_key"] = None
        print(asyncio.run(run_load(service.base_url, model_id, **options)).summary())  # noqa: T201


if __name__ == "__main__":
    main()
