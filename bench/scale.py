"""Scale-out: one PGD evaluation of 4,000 samples on 1 worker and on 2 workers, each pinned to one core.

Starts a private `redis-server`, the API (uvicorn) and Celery workers (pool solo) on a store in a temporary
data dir (SQLite, or PostgreSQL with `--database-url`), uploads the small CNN of the tests (trained here),
and times submit → succeeded of PGD-40 L∞ (eps 0.3, step 0.01) on 4,000 images of builtin:mnist-5k for:

- 1 worker, whole (sharding off): the single-worker reference;
- 1 worker, sharded: the same shards as below, run one after the other (the cost of sharding);
- 2 workers, sharded: the shards on both at once.

Each worker is pinned to its own core (`os.sched_setaffinity`) with TF_NUM_INTRAOP_THREADS and
TF_NUM_INTEROP_THREADS at 1, and warmed up (model loaded, attack compiled) before the timed job. Prints the
wall times (min and median of `--repeats` timed jobs), the speedup of the minima, and whether the merged
reports equal the single-worker one (timing fields aside). Never passes or fails on time.

    python bench/scale.py [--samples 4000] [--shard-size 1000] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TIMING = {"seconds", "samples_per_second"}
PGD = {"name": "pgd", "eps": 0.3, "steps": 40, "step_size": 0.01}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


class Cluster:
    """Redis, the API and a changing set of pinned workers, all on loopback in one data dir."""

    def __init__(self, work: Path, database_url: str | None) -> None:
        self.work = work
        self.redis_port, self.api_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "PARRY_DATA_DIR": str(work / "data"),
            "PARRY_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        if database_url:
            self.env["PARRY_DATABASE_URL"] = database_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=60)

    def _start(self, command: list[str], log: str, env: dict[str, str], core: int | None = None) -> Any:
        out = (self.work / log).open("ab")
        pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin
        )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed")
        self._start(
            [server, "--port", str(self.redis_port), "--save", "", "--appendonly", "no"],
            "redis.log",
            self.env,
        )
        api = [
            sys.executable,
            "-m",
            "uvicorn",
            "service.main:create_app",
            "--factory",
            "--port",
            str(self.api_port),
        ]
        self._start(api, "api.log", self.env)
        wait_until(lambda: self.client.get("/readyz").status_code == 200, "the API answering /readyz")

    def start_workers(self, cores: list[int], extra_env: dict[str, str]) -> None:
        env = {**self.env, **extra_env, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
        for core in cores:
            name = f"bench{core}-{len(self.procs)}@%h"
            log = f"worker-{len(self.procs)}.log"
            command = [
                sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=solo",
                "-Q", "parry", "-l", "info", "-n", name, "--without-mingle", "--without-gossip",
            ]  # fmt: skip
            self.workers.append(self._start(command, log, env, core=core))
            path = self.work / log
            wait_until(lambda path=path: "ready." in path.read_text(errors="replace"), "a worker starting")

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.terminate()
            proc.wait(timeout=60)
        self.workers.clear()

    def stop(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def evaluate(self, spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        response = self.client.post("/v1/evaluations", json={**spec, "no_cache": True})
        response.raise_for_status()
        job_id = response.json()["id"]

        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_until(done, f"job {job_id} ending", timeout=3600)
        seconds = time.perf_counter() - started
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        return job, seconds


@contextlib.contextmanager
def cluster(database_url: str | None) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="parry-scale-") as work:
        c = Cluster(Path(work), database_url)
        try:
            c.start()
            yield c
        finally:
            c.stop()


def trained_model(path: Path) -> Path:
    from service.datasets import load_builtin
    from tests.modelzoo import small_cnn, train_clean

    model = train_clean(small_cnn(), load_builtin("builtin:mnist-5k:train"), epochs=3)
    model.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL (default: SQLite in the data dir)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed jobs per configuration (min and median)"
    )
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs two cores")

    with cluster(args.database_url) as c:
        model_path = trained_model(c.work / "cnn.keras")
        with model_path.open("rb") as fh:
            upload = c.client.post("/v1/models", files={"file": (model_path.name, fh)})
        upload.raise_for_status()
        model_id = upload.json()["id"]
        spec = {
            "model_id": model_id,
            "dataset_id": "builtin:mnist-5k",
            "max_samples": args.samples,
            "attacks": [PGD],
            "batch_size": args.batch_size,
            "seed": 0,
        }
        warm = {**spec, "max_samples": 2 * args.batch_size}
        whole = {"PARRY_SHARD_MIN_SAMPLES": str(10**9)}
        sharded = {"PARRY_SHARD_MIN_SAMPLES": "1", "PARRY_SHARD_SIZE": str(args.shard_size)}
        runs: list[tuple[str, list[dict[str, Any]], list[float]]] = []
        for label, worker_cores, extra in (
            ("1 worker, whole", cores[:1], whole),
            ("1 worker, sharded", cores[:1], sharded),
            ("2 workers, sharded", cores[:2], whole | sharded),
        ):
            c.start_workers(worker_cores, extra)
            if not runs:
                wait_until(
                    lambda: c.client.get(f"/v1/models/{model_id}").json()["status"] == "ready", "validation"
                )
            # Warm every worker (model loaded, PGD compiled): as many small jobs at once as workers.
            warmups = [
                c.client.post("/v1/evaluations", json={**warm, "seed": 100 + i, "no_cache": True}).json()[
                    "id"
                ]
                for i in range(len(worker_cores))
            ]
            for job_id in warmups:
                wait_until(
                    lambda job_id=job_id: c.client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
                    "warm-up",
                )
            timed = [c.evaluate(spec) for _ in range(args.repeats)]
            runs.append((label, [job for job, _ in timed], [seconds for _, seconds in timed]))
            c.stop_workers()

    reference = without_timing(runs[0][1][0]["result"])
    base = min(runs[0][2])
    result = runs[0][1][0]["result"]
    print(
        f"PGD-{PGD['steps']} L∞ eps {PGD['eps']} on {result['num_samples']} samples of builtin:mnist-5k, "
        f"batch {args.batch_size}, shard size {args.shard_size}; "
        f"clean accuracy {result['clean_accuracy']:.3f}, "
        f"robust accuracy {result['attacks'][0]['robust_accuracy']:.3f}; each worker on one core, 1 TF thread"
    )
    print(
        f"{'configuration':<22} {'min s':>7} {'median s':>9} {'speedup':>8}  reports equal to 1 worker, whole"
    )
    for label, jobs, seconds in runs:
        equal = all(without_timing(job["result"]) == reference for job in jobs)
        best, median = min(seconds), statistics.median(seconds)
        print(f"{label:<22} {best:7.1f} {median:9.1f} {base / best:8.2f}  {'yes' if equal else 'NO'}")


if __name__ == "__main__":
    main()
