"""Service figures: API start time and memory, job-read latency under load, submit-to-running, uploads.

Prints figures; never passes or fails on time. Everything runs on loopback in a temporary data dir with a
private redis-server, SQLite (or `--database-url`), the API as a uvicorn subprocess and one Celery worker.

    python bench/service.py [--upload-mb 500] [--requests 6400] [--clients 32] [--runs 3] [--jobs 5]
        [--database-url sqlite] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

`--database-url` may be given more than once (`sqlite` is the default store): the whole benchmark runs
on each database in turn, and a table at the end puts their figures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, stack, tiny_keras_model  # noqa: E402
from service.store.jobs import JobStore  # noqa: E402


def loads_tensorflow(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "tensorflow" in maps


def big_saved_model_zip(path: Path, size_mb: int) -> None:
    """A SavedModel zip of about `size_mb` MB: a tiny model export plus incompressible padding."""
    import keras

    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    export = path.parent / "export"
    model.export(str(export), verbose=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for item in sorted(export.rglob("*")):
            if item.is_file():
                zf.write(item, item.relative_to(export).as_posix())
        with zf.open("assets/padding.bin", "w", force_zip64=True) as out:
            chunk = os.urandom(1 << 20)
            for _ in range(size_mb):
                out.write(chunk)


async def read_latency(
    port: int, job_ids: list[str], *, clients: int, requests: int
) -> tuple[list[float], float]:
    """Per-request latencies of `GET /v1/jobs/{id}` and the wall time, `clients` keep-alive connections.

    A raw HTTP/1.1 client on asyncio streams: the load generator shares the two cores with the API, and
    httpx spends several times what this does per request, which would measure the client, not the API.
    Client `c` polls `job_ids[c % len(job_ids)]`, as CI clients each poll their own job.
    """
    times: list[float] = []
    per_client = requests // clients

    async def one(job_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        try:
            for _ in range(per_client):
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                times.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"GET /v1/jobs/{job_id} answered {head.splitlines()[0]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(job_ids[c % len(job_ids)]) for c in range(clients)))
    return times, time.perf_counter() - start


def cache_counts(bench: Stack) -> tuple[float, float]:
    """The API's job-cache hits and misses so far (its /metrics)."""
    values = {}
    for line in bench.client.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("parry_job_cache_hits_total", "parry_job_cache_misses_total"):
            values[name] = float(value)
    return values.get("parry_job_cache_hits_total", 0.0), values.get("parry_job_cache_misses_total", 0.0)


def change_visible(bench: Stack, store: JobStore, *, samples: int) -> list[float]:
    """Seconds from a cancel committed by another process (this one) to the API answering `cancelled`.

    Each job is read until the API answers it from its cache, so the change has a cached body to replace;
    the reader then polls as fast as one httpx client does (about a millisecond per request).
    """
    seconds = []
    for _ in range(samples):
        job, _ = store.create_job(owner="local", kind="evaluation", spec={})
        hits = cache_counts(bench)[0]
        while True:
            for _ in range(3):
                bench.client.get(f"/v1/jobs/{job.id}")
            if cache_counts(bench)[0] >= hits + 2:
                break
        store.request_cancel(job.id, owner="local")
        start = time.perf_counter()
        while bench.client.get(f"/v1/jobs/{job.id}").json()["status"] != "cancelled":
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)


def bench_database(args: argparse.Namespace, database_url: str | None) -> dict[str, str]:
    """Every figure on one database (None: SQLite in the data dir); the summary's column for it."""
    summary: dict[str, str] = {}
    with stack("parry-bench-", database_url) as bench:
        bench.start_redis()
        start = time.perf_counter()
        bench.start_api()
        api_start = time.perf_counter() - start
        assert bench.api is not None
        api_pid = bench.api.pid
        rss_idle = psutil.Process(api_pid).memory_info().rss
        print(f"API start to /readyz 200: {api_start:.2f} s; RSS idle {rss_idle / 2**20:.0f} MiB")

        bench.start_workers([None])
        model_id = bench.upload_model(tiny_keras_model(bench.work / "tiny.keras"))
        spec: dict[str, Any] = {
            "model_id": model_id,
            "dataset_id": "builtin:mnist-5k:test",
            "attacks": [{"name": "fgsm", "eps": 0.1}],
            "max_samples": 32,
            "no_cache": True,  # else an identical evaluation is answered at once from the first one
        }

        def run_one() -> dict[str, Any]:
            response = bench.client.post("/v1/evaluations", json=spec)
            response.raise_for_status()
            return bench.wait_job(response.json()["id"])

        job_ids = [run_one()["id"]]  # warm: model loaded and attack compiled in the worker
        delays = []
        for _ in range(args.jobs):
            body = run_one()
            created = datetime.fromisoformat(body["created_at"])
            started = datetime.fromisoformat(body["started_at"])
            delays.append((started - created).total_seconds())
            job_ids.append(body["id"])
        print(
            f"submit -> running (warm worker, {args.jobs} jobs): "
            f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
        )
        summary["submit -> running, median / max"] = (
            f"{statistics.median(delays) * 1000:.0f} / {max(delays) * 1000:.0f} ms"
        )

        # The worker's threads keep spinning briefly after its last job; on 2 shared cores that is noise here.
        time.sleep(2)
        port = bench.api_port
        asyncio.run(read_latency(port, job_ids, clients=args.clients, requests=args.clients * 20))  # warm
        single, _ = asyncio.run(read_latency(port, job_ids, clients=1, requests=500))
        print(f"GET /v1/jobs/{{id}}, 1 client, 500 requests: p50 {pct(single, 0.5) * 1000:.2f} ms")
        summary["1 client: p50"] = f"{pct(single, 0.5) * 1000:.2f} ms"
        runs = []
        for run in range(1, args.runs + 1):
            hits, misses = cache_counts(bench)
            times, wall = asyncio.run(
                read_latency(port, job_ids, clients=args.clients, requests=args.requests)
            )
            hits_after, misses_after = cache_counts(bench)
            reads = (hits_after - hits) + (misses_after - misses)
            hit_rate = (hits_after - hits) / reads if reads else 0.0
            runs.append((pct(times, 0.5), pct(times, 0.99), max(times), len(times) / wall, hit_rate))
            print(
                f"GET /v1/jobs/{{id}}, {args.clients} concurrent clients over {len(job_ids)} jobs, "
                f"{len(times)} requests (run {run}): p50 {pct(times, 0.5) * 1000:.1f} ms, "
                f"p99 {pct(times, 0.99) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms, "
                f"{len(times) / wall:.0f} req/s, job cache hit rate {hit_rate:.1%}"
            )

        def each(i: int, fmt: str) -> str:
            return " / ".join(format(r[i], fmt) for r in runs)

        clients = f"{args.clients} clients"
        summary[f"{clients}: p50 ms"] = " / ".join(f"{r[0] * 1000:.1f}" for r in runs)
        summary[f"{clients}: **p99** ms"] = " / ".join(f"{r[1] * 1000:.1f}" for r in runs)
        summary[f"{clients}: max ms"] = " / ".join(f"{r[2] * 1000:.1f}" for r in runs)
        summary[f"{clients}: req/s"] = each(3, ".0f")
        summary[f"{clients}: job cache hit rate"] = " / ".join(f"{r[4]:.1%}" for r in runs)

        # A change committed by another process (a worker, `parry`, a second API) reaching a reader.
        store = JobStore(database_url or f"sqlite:///{(bench.work / 'data' / 'parry.db').resolve()}")
        try:
            visible = change_visible(bench, store, samples=20)
        finally:
            store.dispose()
        print(
            f"cancel committed by another process -> the API answers it (20 jobs): "
            f"median {statistics.median(visible) * 1000:.1f} ms, max {max(visible) * 1000:.1f} ms"
        )
        summary["change -> visible, median / max"] = (
            f"{statistics.median(visible) * 1000:.1f} / {max(visible) * 1000:.1f} ms"
        )

        if args.upload_mb:
            big = bench.work / "big_saved_model.zip"
            big_saved_model_zip(big, args.upload_mb)
            size = big.stat().st_size
            peak = PeakRss(api_pid)
            peak.start()
            start = time.perf_counter()
            with big.open("rb") as fh:
                response = bench.client.post("/v1/models", files={"file": (big.name, fh)})
            seconds = time.perf_counter() - start
            peak.done.set()
            peak.join()
            print(
                f"upload of a {size / 2**20:.0f} MiB SavedModel zip: {response.status_code}, "
                f"{seconds:.1f} s, {size / 2**20 / seconds:.0f} MiB/s; "
                f"API peak RSS {peak.peak / 2**20:.0f} MiB"
            )
        tf_in_api = loads_tensorflow(api_pid)
        print(f"tensorflow mapped in the API process: {tf_in_api}")
        assert not tf_in_api, "the API process loaded TensorFlow"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mb", type=int, default=500)
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument(
        "--database-url",
        action="append",
        help="the job store; `sqlite` (the default) is SQLite in the temporary data dir; repeat to compare",
    )
    parser.add_argument("--runs", type=int, default=3, help="repeats of the concurrent read test")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=5, help="warm submit-to-running samples")
    args = parser.parse_args()

    columns: dict[str, dict[str, str]] = {}
    for url in args.database_url or ["sqlite"]:
        name = "SQLite" if url == "sqlite" else sa.make_url(url).get_backend_name()
        print(f"== {name} ({url})")
        columns[name] = bench_database(args, None if url == "sqlite" else url)
    if len(columns) > 1:
        names = list(columns)
        print("\n| figure | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for figure in columns[names[0]]:
            print(f"| {figure} | " + " | ".join(columns[n].get(figure, "") for n in names) + " |")


if __name__ == "__main__":
    main()
