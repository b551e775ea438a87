"""Issue 6 faults end to end: Redis loses its queue, a worker dies mid-PGD; results match undisturbed runs."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RedisServer, Service, one_database

# What these faults exercise is the queue, the leases and the processes; test_service.py repeats the
# API restart and the killed worker on PostgreSQL.
pytestmark = one_database

TIMING = {"seconds", "samples_per_second", "eta_seconds"}


def _spec(model_id: str, seed: int) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "fgsm", "eps": [0.05, 0.1]}, {"name": "pgd", "eps": 0.1, "steps": 5}],
        "max_samples": 64,
        "seed": seed,
        "no_cache": True,  # each submission must run, not reuse the other's result
    }


def comparable(value: Any) -> Any:
    """A result without its timing fields, floats rounded past run-to-run noise in the last bits."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    return value


@pytest.fixture(scope="module")
def model_id(service: Service, e2e_files: dict[str, Path]) -> str:
    response = service.upload_model(e2e_files["keras"], name="cnn-keras")
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready", model
    return str(model["id"])


def _submit(service: Service, spec: dict[str, Any]) -> str:
    response = service.submit(spec)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _queue_length(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen("parry"))
    finally:
        client.close()


def test_jobs_queued_when_redis_restarts_are_re_enqueued_and_match_undisturbed_runs(
    service: Service, model_id: str, redis_server: RedisServer | None
) -> None:
    if redis_server is None:
        pytest.skip("the broker is not ours to restart (PARRY_E2E_REDIS_URL)")
    seeds = [11, 12, 13]
    service.kill_worker(signal.SIGTERM)  # idle: nothing consumes, so the jobs wait in Redis
    try:
        disturbed = [_submit(service, _spec(model_id, seed)) for seed in seeds]
        assert _queue_length(redis_server.url) >= len(seeds)
        redis_server.stop()  # no persistence: the queue is gone
        redis_server.start()
        assert _queue_length(redis_server.url) == 0
    finally:
        if redis_server.proc is None:
            redis_server.start()
        service.start_worker()
    # The worker's reconciler finds them queued in the store for over 5 s and sends them again.
    done = [service.wait_job(job_id, timeout=120) for job_id in disturbed]
    assert [job["status"] for job in done] == ["succeeded"] * len(seeds), done
    assert all(job["attempts"] == 1 for job in done)

    undisturbed = [service.wait_job(_submit(service, _spec(model_id, seed))) for seed in seeds]
    for after_fault, reference in zip(done, undisturbed, strict=True):
        assert reference["status"] == "succeeded", reference
        assert comparable(after_fault["result"]) == comparable(reference["result"])


def test_a_worker_killed_mid_pgd_gives_the_same_result_as_an_undisturbed_run(
    service: Service, model_id: str
) -> None:
    if "PARRY_DATABASE_URL" in service.env:
        pytest.skip("a worker's death does not depend on the database: the SQLite variant covers it")
    spec = {
        "model_id": model_id,
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "pgd", "eps": 0.05, "steps": 10, "restarts": 6}],
        "batch_size": 50,
        "max_samples": 300,
        "seed": 5,
        "no_cache": True,
    }
    job_id = _submit(service, spec)
    deadline = time.monotonic() + 120
    while True:  # wait until PGD runs (progress past the model load and the clean pass)
        job = service.wait_job(job_id, {"running", "succeeded", "failed"})
        if job["status"] != "running" or (job["progress"] or {}).get("fraction", 0) > 0:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "running", "the job finished before the kill: make it longer"
    assert service.worker is not None
    leftover = list((service.data_dir / "work").glob(f"child-*.*.{service.worker.pid}"))
    assert len(leftover) == 1, leftover  # the model process's scratch, which the kill leaves behind
    service.kill_worker(signal.SIGKILL)
    service.start_worker()
    killed = service.wait_job(job_id)
    assert killed["status"] == "succeeded" and killed["attempts"] == 2, killed
    assert not leftover[0].exists(), "the new worker did not sweep the killed one's scratch directory"

    reference = service.wait_job(_submit(service, spec))
    assert reference["status"] == "succeeded" and reference["attempts"] == 1, reference
    assert comparable(killed["result"]) == comparable(reference["result"])


def test_the_worker_runs_with_its_resource_limits(service: Service) -> None:
    assert service.worker is not None
    limits = {
        line[:26].strip(): line[26:].split()[:2]
        for line in Path(f"/proc/{service.worker.pid}/limits").read_text().splitlines()[1:]
    }
    assert limits["Max open files"] == ["4096", "4096"]  # worker_max_open_files, soft and hard
    assert limits["Max core file size"] == ["0", "0"]


def test_an_api_restart_mid_job_gives_the_same_result_as_an_undisturbed_run(
    service: Service, model_id: str
) -> None:
    spec = {
        "model_id": model_id,
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "pgd", "eps": 0.05, "steps": 10, "restarts": 4}],
        "batch_size": 50,
        "max_samples": 200,
        "seed": 6,
        "no_cache": True,
    }
    job_id = _submit(service, spec)
    service.wait_job(job_id, {"running", "succeeded", "failed"})
    service.stop_api()
    service.start_api()
    restarted = service.wait_job(job_id)
    assert restarted["status"] == "succeeded" and restarted["attempts"] == 1, restarted

    reference = service.wait_job(_submit(service, spec))
    assert reference["status"] == "succeeded", reference
    assert comparable(restarted["result"]) == comparable(reference["result"])
