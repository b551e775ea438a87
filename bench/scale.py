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
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, stack, wait_until  # noqa: E402

TIMING = {"seconds", "samples_per_second"}
PGD = {"name": "pgd", "eps": 0.3, "steps": 40, "step_size": 0.01}


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def timed_evaluation(c: Stack, spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Submit an evaluation (never from the cache), wait for it; the job and its submit-to-end seconds."""
    started = time.perf_counter()
    response = c.client.post("/v1/evaluations", json={**spec, "no_cache": True})
    response.raise_for_status()
    job = c.wait_job(response.json()["id"])
    seconds = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    return job, seconds


def trained_model(path: Path) -> Path:
    from service.domain.datasets import load_builtin
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

    with stack("parry-scale-", args.database_url) as c:
        c.start()
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
            timed = [timed_evaluation(c, spec) for _ in range(args.repeats)]
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
