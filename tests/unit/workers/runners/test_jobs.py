"""The worker's job logic called as plain functions: real store, real artifacts, a real tiny Keras model."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np

from service.domain.tasks import DELIVER_CALLBACK, RUN_EVALUATION
from service.settings import Settings
from tests.workerkit import DIGITS_FGSM, Sent, evaluation_job, ready_model, upload_model, worker_context
from workers.context import WorkerContext
from workers.runners import evaluation as jobs
from workers.runners import validation
from workers.runtime import heartbeat

# Many restarts of a tiny-eps PGD (few samples fall, so every restart runs) in small batches: about 30 s,
# with a chance to stop between every two batches.
DIGITS_LONG = {
    "dataset_id": "builtin:digits",
    "attacks": [{"name": "pgd", "eps": 0.01, "steps": 10, "restarts": 50}],
    "batch_size": 16,
}


def _sent(ctx: WorkerContext) -> list[tuple[str, str]]:
    assert isinstance(ctx.send, Sent)
    return list(ctx.send)


def test_validate_marks_a_good_model_ready_and_a_bad_one_rejected(
    ctx: WorkerContext, digits_keras: Path, tmp_path: Path
) -> None:
    model_id = ready_model(ctx, digits_keras)
    record = ctx.store.get_model(model_id)
    assert (record.status, record.input_shape, record.num_classes, record.output) == (
        "ready",
        [8, 8, 1],
        10,
        "logits",
    )
    assert ctx.children.started == 1  # validation's child stays warm for the first job on the model
    assert validation.validate_model(ctx, model_id) == "ready"  # a redelivery changes nothing

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model at all" * 100)
    bad_id = upload_model(ctx, bad)
    assert validation.validate_model(ctx, bad_id) == "rejected"
    rejection = ctx.store.get_model(bad_id).rejection
    assert rejection and "Traceback" not in rejection
    assert validation.validate_model(ctx, "mdl_missing") is None


def test_a_validation_slower_than_the_reconcilers_cutoff_never_looks_lost(
    tmp_path: Path, digits_keras: Path
) -> None:
    """Its heartbeat beats within the cutoff, so no second worker is sent the same validation."""
    cutoff = 1.5
    settings = Settings(data_dir=tmp_path, redis_url="redis://unused", requeue_queued_after_s=cutoff)
    with worker_context(settings) as ctx:
        model_id = upload_model(ctx, digits_keras)
        seen_lost: list[float] = []
        done = threading.Event()

        def watch() -> None:  # what the reconciler asks, polled far more often than it does
            while not done.is_set():
                if ctx.store.stale_validating_models(older_than_seconds=cutoff):
                    seen_lost.append(time.monotonic())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            assert validation.validate_model(ctx, model_id) == "ready"
        finally:
            done.set()
            watcher.join()
        # A cold child imports TensorFlow first: the validation outlasted the cutoff, so the check bites.
        assert time.monotonic() - started > 2 * cutoff
        assert seen_lost == []


def test_a_model_whose_validation_keeps_killing_workers_is_rejected(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    model_id = upload_model(ctx, digits_keras)
    # Workers that took the message and died before settling the model (kill -9, a crash in TensorFlow).
    for attempt in range(1, validation.MAX_VALIDATION_ATTEMPTS + 1):
        assert ctx.store.start_model_validation(model_id) == attempt
    assert validation.validate_model(ctx, model_id) == "rejected"
    record = ctx.store.get_model(model_id)
    limit = validation.MAX_VALIDATION_ATTEMPTS
    assert record.status == "rejected" and record.validation_attempts == limit + 1
    assert record.rejection is not None and f"stopped the worker {limit} times" in record.rejection
    # A settled model is not counted again.
    assert ctx.store.start_model_validation(model_id) is None
    # One that outlived fewer deaths is still validated (another owner's record of the same bytes).
    blob = ctx.artifacts.put_file(digits_keras)
    other, _ = ctx.store.add_model(
        owner="p", name="m", sha256=blob.sha256, format="keras", size_bytes=blob.size_bytes, output="auto"
    )
    for _ in range(validation.MAX_VALIDATION_ATTEMPTS - 1):
        ctx.store.start_model_validation(other.id)
    assert validation.validate_model(ctx, other.id) == "ready"
    assert ctx.store.get_model(other.id).validation_attempts == validation.MAX_VALIDATION_ATTEMPTS


def test_run_evaluation_succeeds_writes_artifacts_and_is_idempotent(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    job_id = evaluation_job(
        ctx, ready_model(ctx, digits_keras), {**DIGITS_FGSM, "callback_url": "http://cb.test/"}
    )
    started = ctx.children.started
    assert jobs.run_evaluation(ctx, job_id) == "succeeded"
    assert ctx.children.started == started  # validation's warm child served the job
    job = ctx.store.get_job(job_id)
    assert job.status == "succeeded" and job.attempts == 1
    assert job.result is not None and job.result["num_samples"] == 359
    assert [a["eps"] for a in job.result["attacks"]] == [0.1, 0.2]
    report = json.loads(ctx.artifacts.job_artifact_path(job_id, "report.json").read_bytes())
    assert report == job.result
    per_sample = np.load(io.BytesIO(ctx.artifacts.job_artifact_path(job_id, "per_sample.npz").read_bytes()))
    assert all(per_sample[name].shape[0] == 359 for name in per_sample.files)
    assert _sent(ctx) == [(DELIVER_CALLBACK, job_id)]
    # A second delivery of the same message does nothing.
    assert jobs.run_evaluation(ctx, job_id) is None
    assert ctx.store.get_job(job_id).result == job.result


def test_a_cancelled_queued_job_never_starts(ctx: WorkerContext, digits_keras: Path) -> None:
    job_id = evaluation_job(ctx, ready_model(ctx, digits_keras), DIGITS_FGSM)
    ctx.store.request_cancel(job_id, owner="o")
    assert jobs.run_evaluation(ctx, job_id) is None
    job = ctx.store.get_job(job_id)
    assert job.status == "cancelled" and job.started_at is None


def test_cancelling_a_running_job_stops_it(ctx: WorkerContext, digits_keras: Path) -> None:
    job_id = evaluation_job(ctx, ready_model(ctx, digits_keras), DIGITS_LONG)

    def cancel_when_running() -> None:
        while ctx.store.get_job(job_id).status != "running":
            time.sleep(0.05)
        time.sleep(1.0)
        ctx.store.request_cancel(job_id, owner="o")

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    started = time.monotonic()
    assert jobs.run_evaluation(ctx, job_id) == "cancelled"
    canceller.join()
    assert time.monotonic() - started < 10  # about 1 s running, then stopped between two batches
    assert ctx.store.get_job(job_id).status == "cancelled"


def test_a_shutting_down_worker_hands_the_job_back(ctx: WorkerContext, digits_keras: Path) -> None:
    job_id = evaluation_job(ctx, ready_model(ctx, digits_keras), DIGITS_LONG)
    heartbeat.SHUTTING_DOWN.set()
    try:
        assert jobs.run_evaluation(ctx, job_id) is None
    finally:
        heartbeat.SHUTTING_DOWN.clear()
    job = ctx.store.get_job(job_id)
    assert job.status == "queued" and job.worker is None
    assert _sent(ctx) == [(RUN_EVALUATION, job_id)]


def test_a_job_over_its_time_limit_fails_with_a_sentence(ctx: WorkerContext, digits_keras: Path) -> None:
    model_id = ready_model(ctx, digits_keras)
    limited = WorkerContext(
        **{**ctx.__dict__, "settings": ctx.settings.model_copy(update={"task_time_limit_s": 1})}
    )
    job_id = evaluation_job(limited, model_id, DIGITS_LONG)
    assert jobs.run_evaluation(limited, job_id) == "failed"
    error = ctx.store.get_job(job_id).error
    assert error == {"type": "TimeLimitExceeded", "detail": "the job exceeded the time limit of 1 s"}


def test_a_dataset_the_model_cannot_take_fails_with_a_sentence(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    job_id = evaluation_job(
        ctx, ready_model(ctx, digits_keras), {**DIGITS_FGSM, "dataset_id": "builtin:mnist-5k:test"}
    )
    assert jobs.run_evaluation(ctx, job_id) == "failed"
    error = ctx.store.get_job(job_id).error
    assert error is not None and error["type"] == "EvaluationError", error
    assert error["detail"] and "Traceback" not in error["detail"]


def test_a_deleted_model_fails_the_job_with_a_sentence(ctx: WorkerContext, digits_keras: Path) -> None:
    model_id = ready_model(ctx, digits_keras)
    job_id = evaluation_job(ctx, model_id, DIGITS_FGSM)
    ctx.store.delete_model(model_id, owner="o")
    assert jobs.run_evaluation(ctx, job_id) == "failed"
    assert ctx.store.get_job(job_id).error == {
        "type": "ModelLoadError",
        "detail": f"model {model_id} no longer exists",
    }


def test_an_evaluation_whose_artifacts_cannot_be_written_fails_with_the_artifact_and_the_os_error(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    job_id = evaluation_job(ctx, ready_model(ctx, digits_keras), DIGITS_FGSM)
    (ctx.settings.data_dir / "jobs" / job_id).write_text("in the way")
    assert jobs.run_evaluation(ctx, job_id) == "failed"
    job = ctx.store.get_job(job_id)
    assert job.error is not None and job.error["type"] == "ArtifactWriteError"
    assert job.error["detail"].startswith(f"the artifact jobs/{job_id}/report.json could not be written: ")
    assert str(ctx.settings.data_dir) not in job.error["detail"]
    assert job.result is None and job.status == "failed"
