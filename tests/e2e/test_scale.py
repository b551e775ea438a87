"""Issue 7 end to end: the API, PostgreSQL, Redis and two separately started workers sharing one data dir.

Jobs spread over both workers, and an evaluation large enough to be sharded runs on both at once and
merges into the report a single worker computes for the same seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.domain.specs import EvaluationOptions
from service.store.jobs import JobStore
from service.store.shards import ShardStore
from tests.dbs import PostgresUnavailable, fresh_postgres_url
from tests.e2e.conftest import Service, _flush, free_port

SHARDED_SPEC: dict[str, Any] = {
    "dataset_id": "builtin:mnist-5k:test",
    "max_samples": 800,
    "attacks": [{"name": "fgsm", "eps": [0.1, 0.2]}, {"name": "pgd", "eps": 0.1, "steps": 10}],
    "batch_size": 50,
    "seed": 3,
    "no_cache": True,
}
TIMING = {"seconds", "samples_per_second"}


@pytest.fixture(scope="module")
def scaled(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, JobStore]]:
    """API + two workers on PostgreSQL, on a Redis database of their own (other e2e services use db 0)."""
    with contextlib.ExitStack() as stack:
        try:
            database_url = stack.enter_context(fresh_postgres_url())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        broker = redis_url.rsplit("/", 1)[0] + "/7"
        _flush(broker)
        data_dir = tmp_path_factory.mktemp("parry-scale")
        env = {
            **os.environ,
            "PARRY_DATA_DIR": str(data_dir),
            "PARRY_DATABASE_URL": database_url,
            "PARRY_REDIS_URL": broker,
            "PARRY_JOB_LEASE_S": "4",
            "PARRY_RECONCILE_INTERVAL_S": "1",
            "PARRY_REQUEUE_QUEUED_AFTER_S": "5",
            # Small enough that SHARDED_SPEC splits into about eight shards of two batches.
            "PARRY_SHARD_MIN_SAMPLES": "500",
            "PARRY_SHARD_SIZE": "100",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        svc = Service(env=env, data_dir=data_dir, port=free_port())
        stack.callback(svc.stop)
        try:
            svc.start_api()
            svc.start_workers(2)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{svc.log_tails()}")
        store = JobStore(database_url)
        stack.callback(store.dispose)
        yield svc, store


@pytest.fixture(scope="module")
def model_id(scaled: tuple[Service, JobStore], e2e_files: dict[str, Path]) -> str:
    svc, _ = scaled
    response = svc.upload_model(e2e_files["keras"], name="cnn")
    assert response.status_code in (200, 201), response.text
    assert svc.wait_model(response.json()["id"])["status"] == "ready"
    return str(response.json()["id"])


def _worker_pids(svc: Service) -> set[str]:
    return {str(proc.pid) for proc in svc.workers}


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def test_jobs_spread_over_separately_started_workers(
    scaled: tuple[Service, JobStore], model_id: str, e2e_files: dict[str, Path]
) -> None:
    svc, store = scaled
    upload = svc.upload_dataset(e2e_files["dataset"])
    assert upload.status_code in (200, 201), upload.text
    spec = {
        "model_id": model_id,
        "dataset_id": upload.json()["id"],
        "attacks": [{"name": "pgd", "eps": 0.1, "steps": 20}],
        "no_cache": True,
    }
    ids = []
    for seed in range(6):
        response = svc.submit({**spec, "seed": seed})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    assert all(svc.wait_job(job_id)["status"] == "succeeded" for job_id in ids)
    workers = {store.get_job(job_id).worker for job_id in ids}
    assert {str(w).rsplit(":", 1)[1] for w in workers} == _worker_pids(svc)  # both workers ran jobs


def test_a_sharded_evaluation_runs_on_both_workers_and_equals_one_worker(
    scaled: tuple[Service, JobStore], model_id: str, e2e_files: dict[str, Path]
) -> None:
    svc, store = scaled
    response = svc.submit({**SHARDED_SPEC, "model_id": model_id})
    assert response.status_code == 202, response.text
    job = svc.wait_job(response.json()["id"])
    assert job["status"] == "succeeded", job
    plan = ShardStore(store).get_plan(job["id"])
    shards = ShardStore(store).shards(job["id"])
    assert plan is not None and plan.num_shards == len(shards) >= 4
    assert {s.status for s in shards} == {"succeeded"}
    assert {str(s.worker).rsplit(":", 1)[1] for s in shards} == _worker_pids(svc)  # at once, on both

    # The single-worker engine in this process, on the same model bytes, data, options and seed.
    from service.domain.datasets import load_builtin
    from workers.evaluation.engine import evaluate
    from workers.models.loading import load_model

    path = e2e_files["keras"]
    model = load_model(
        path, output="auto", sha256=hashlib.sha256(path.read_bytes()).hexdigest(), work_dir=path.parent / "w"
    )
    options = EvaluationOptions.model_validate(
        {k: v for k, v in SHARDED_SPEC.items() if k in EvaluationOptions.model_fields}
    )
    single = evaluate(model, load_builtin(SHARDED_SPEC["dataset_id"]), options).result.model_dump(mode="json")
    assert job["result"]["num_samples"] == 800
    assert _without_timing(job["result"]) == _without_timing(single)
    assert job["result"]["attacks"][2]["robust_accuracy"] < job["result"]["clean_accuracy"]
