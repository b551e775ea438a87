"""Service figures: API start time and memory, job-read latency under load, submit-to-running, uploads.

Prints figures; never passes or fails on time. Everything runs on loopback in a temporary data dir with a
private redis-server, SQLite (or `--database-url`), the API as a uvicorn subprocess and one Celery worker.

    python bench/service.py [--upload-mb 500] [--requests 6400] [--clients 32] [--runs 3] [--jobs 5]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer 200 in {timeout} s")


def loads_tensorflow(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "tensorflow" in maps


def tiny_keras_model(path: Path) -> None:
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(path)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mb", type=int, default=500)
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument("--database-url", help="the job store (default: SQLite in the temporary data dir)")
    parser.add_argument("--runs", type=int, default=3, help="repeats of the concurrent read test")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=5, help="warm submit-to-running samples")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parry-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_port = free_port()
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--save", "", "--dir", str(work)],
                stdout=subprocess.DEVNULL,
            )
        )
        env = {
            **os.environ,
            "PARRY_DATA_DIR": str(work / "data"),
            "PARRY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        env.pop("PARRY_DATABASE_URL", None)
        if args.database_url:
            env["PARRY_DATABASE_URL"] = args.database_url
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api_log = (work / "api.log").open("wb")
        start = time.perf_counter()
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory", "--port", str(port),
             "--no-access-log", "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=api_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(api)
        wait_http(f"{base}/readyz")
        api_start = time.perf_counter() - start
        rss_idle = psutil.Process(api.pid).memory_info().rss
        print(f"API start to /readyz 200: {api_start:.2f} s; RSS idle {rss_idle / 2**20:.0f} MiB")

        worker_log = (work / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=solo",
             "-Q", "parry", "-l", "info", "--without-mingle", "--without-gossip"],
            env=env, cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(worker)

        model_path = work / "tiny.keras"
        tiny_keras_model(model_path)
        with httpx.Client(base_url=base, timeout=600) as client, model_path.open("rb") as fh:
            model = client.post("/v1/models", files={"file": (model_path.name, fh)}).json()
            deadline = time.monotonic() + 120
            while client.get(f"/v1/models/{model['id']}").json()["status"] == "validating":
                assert time.monotonic() < deadline, "model validation took too long"
                time.sleep(0.1)
            spec: dict[str, Any] = {
                "model_id": model["id"],
                "dataset_id": "builtin:mnist-5k:test",
                "attacks": [{"name": "fgsm", "eps": 0.1}],
                "max_samples": 32,
                "no_cache": True,  # else an identical evaluation is answered at once from the first one
            }

            def run_one() -> dict[str, Any]:
                job = client.post("/v1/evaluations", json=spec).json()
                while (body := client.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
                    time.sleep(0.01)
                return dict(body)

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

        # The worker's threads keep spinning briefly after its last job; on 2 shared cores that is noise here.
        time.sleep(2)
        asyncio.run(read_latency(port, job_ids, clients=args.clients, requests=args.clients * 20))  # warm
        single, _ = asyncio.run(read_latency(port, job_ids, clients=1, requests=500))
        print(f"GET /v1/jobs/{{id}}, 1 client, 500 requests: p50 {pct(single, 0.5) * 1000:.2f} ms")
        for run in range(1, args.runs + 1):
            times, wall = asyncio.run(
                read_latency(port, job_ids, clients=args.clients, requests=args.requests)
            )
            print(
                f"GET /v1/jobs/{{id}}, {args.clients} concurrent clients over {len(job_ids)} jobs, "
                f"{len(times)} requests (run {run}): p50 {pct(times, 0.5) * 1000:.1f} ms, "
                f"p99 {pct(times, 0.99) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms, "
                f"{len(times) / wall:.0f} req/s"
            )

        if args.upload_mb:
            big = work / "big_saved_model.zip"
            big_saved_model_zip(big, args.upload_mb)
            size = big.stat().st_size
            peak = PeakRss(api.pid)
            peak.start()
            start = time.perf_counter()
            with httpx.Client(base_url=base, timeout=600) as client, big.open("rb") as fh:
                response = client.post("/v1/models", files={"file": (big.name, fh)})
            seconds = time.perf_counter() - start
            peak.done.set()
            peak.join()
            print(
                f"upload of a {size / 2**20:.0f} MiB SavedModel zip: {response.status_code}, "
                f"{seconds:.1f} s, {size / 2**20 / seconds:.0f} MiB/s; "
                f"API peak RSS {peak.peak / 2**20:.0f} MiB"
            )
        tf_in_api = loads_tensorflow(api.pid)
        print(f"tensorflow mapped in the API process: {tf_in_api}")
        assert not tf_in_api, "the API process loaded TensorFlow"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
