"""The worker's training job called as a plain function: real store, real artifacts, a tiny Keras model."""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import load_builtin
from service.domain.specs import TrainingOptions
from workers.context import WorkerContext
from workers.runners import evaluation as jobs
from workers.runners import training as training_jobs
from workers.runners import validation
from workers.training import TrainingCancelled, train

# One short epoch on the 8x8 digits: a few seconds.
SHORT = {
    "dataset_id": "builtin:digits:train",
    "validation_dataset_id": "builtin:digits:test",
    "method": "fgsm-rs",
    "eps": 0.1,
    "epochs": 1,
    "batch_size": 64,
    "validation_samples": 50,
    "evaluate": [{"name": "fgsm", "eps": 0.1}],
}
OPTIONS = {k: v for k, v in SHORT.items() if not k.endswith("dataset_id")}


def _ready_model(ctx: WorkerContext, path: Path, fmt: str = "keras") -> str:
    blob = ctx.artifacts.put_file(path)
    record, _ = ctx.store.add_model(
        owner="o", name="digits", sha256=blob.sha256, format=fmt, size_bytes=blob.size_bytes, output="auto"
    )
    assert validation.validate_model(ctx, record.id) == "ready"
    return record.id


def _job(ctx: WorkerContext, model_id: str, **extra: Any) -> str:
    job, _ = ctx.store.create_job(owner="o", kind="training", spec={"model_id": model_id, **SHORT, **extra})
    return job.id


def _predict(ctx: WorkerContext, model_id: str, x: np.ndarray) -> np.ndarray:
    """The stored model's logits, loaded here in the test process (the workers only load in children)."""
    from workers.models.loading import load_model

    record = ctx.store.get_model(model_id)
    path = ctx.artifacts.blob_path(record.sha256)
    return np.asarray(load_model(path, output=record.output, sha256=record.sha256).logits(x))


def test_training_registers_a_ready_model_and_writes_artifacts(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    model_id = _ready_model(ctx, digits_keras)
    assert ctx.store.get_model(model_id).trainable is True
    x = load_builtin("builtin:digits:test").x[:20]
    cached_before = _predict(ctx, model_id, x)
    job_id = _job(ctx, model_id)

    assert training_jobs.run_training(ctx, job_id) == "succeeded"
    job = ctx.store.get_job(job_id)
    result = job.result
    assert result is not None and job.error is None
    assert result["method"] == "fgsm-rs" and result["epochs_completed"] == 1 and not result["resumed"]
    assert result["before"]["attacks"][0]["eps"] == 0.1 and result["after"]["clean_accuracy"] > 0.5
    assert result["seconds"] > 0 and len(result["history"]) == 1

    new = ctx.store.get_model(result["model_id"])
    assert new.id != model_id and new.owner == "o" and new.name == "digits-fgsm-rs"
    assert (new.status, new.format, new.input_shape, new.num_classes, new.output, new.trainable) == (
        "ready", "saved_model", [8, 8, 1], 10, "logits", True,
    )  # fmt: skip
    names = {a.name for a in ctx.artifacts.list_job_artifacts(job_id)}
    assert names == {"model.zip", "model.keras", "report.json"}
    archive = ctx.artifacts.job_artifact_path(job_id, "model.zip")
    assert archive.read_bytes() == ctx.artifacts.blob_path(new.sha256).read_bytes()
    with zipfile.ZipFile(archive) as zf:
        assert "saved_model.pb" in zf.namelist()
    assert not training_jobs.work_dir(ctx, job_id).exists()  # checkpoints go once the job has ended
    # The upload itself was not trained (the training ran on a copy, in a child of its own).
    np.testing.assert_array_equal(_predict(ctx, model_id, x), cached_before)
    # The registered model is an ordinary model: an evaluation job runs on it.
    eval_job, _ = ctx.store.create_job(
        owner="o",
        kind="evaluation",
        spec={
            "model_id": new.id,
            "dataset_id": "builtin:digits:test",
            "attacks": [{"name": "fgsm", "eps": 0.1}],
        },
    )
    assert jobs.run_evaluation(ctx, eval_job.id) == "succeeded"
    evaluated = ctx.store.get_job(eval_job.id).result
    assert evaluated is not None
    assert evaluated["clean_accuracy"] == pytest.approx(result["after"]["clean_accuracy"])
    assert training_jobs.run_training(ctx, job_id) is None  # a redelivery of a finished job does nothing


def test_a_redelivered_job_resumes_from_its_checkpoint(ctx: WorkerContext, digits_keras: Path) -> None:
    from workers.models.loading import load_model

    model_id = _ready_model(ctx, digits_keras)
    job_id = _job(ctx, model_id, epochs=2)
    record = ctx.store.get_model(model_id)
    # What a worker killed in epoch 2 leaves: a checkpoint in the job's folder.
    calls = iter(range(10**6))
    with pytest.raises(TrainingCancelled):
        train(
            load_model(ctx.artifacts.blob_path(record.sha256), output="logits", sha256=record.sha256),
            load_builtin("builtin:digits:train"),
            load_builtin("builtin:digits:test"),
            TrainingOptions.model_validate({**OPTIONS, "epochs": 2}),
            checkpoint_dir=training_jobs.work_dir(ctx, job_id) / "child" / "checkpoint",
            should_stop=lambda: next(calls) >= 30,  # 23 batches an epoch and 1 validation batch
        )

    assert training_jobs.run_training(ctx, job_id) == "succeeded"
    result = ctx.store.get_job(job_id).result
    assert result is not None and result["resumed"] and result["epochs_completed"] == 2
    assert ctx.store.get_model(result["model_id"]).status == "ready"


def test_a_model_without_variables_is_marked_untrainable_and_its_job_fails_with_a_sentence(
    ctx: WorkerContext, tmp_path: Path
) -> None:
    import tensorflow as tf

    from tests.modelzoo import zip_dir

    weights = tf.constant(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32))

    class Frozen(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 1), tf.float32)])  # type: ignore[untyped-decorator]
        def serve(self, x: tf.Tensor) -> tf.Tensor:
            return tf.matmul(tf.reshape(x, (-1, 64)), weights)

    module = Frozen()
    tf.saved_model.save(module, str(tmp_path / "frozen"), signatures={"serving_default": module.serve})
    model_id = _ready_model(ctx, zip_dir(tmp_path / "frozen", tmp_path / "frozen.zip"), fmt="saved_model")
    assert ctx.store.get_model(model_id).trainable is False

    job_id = _job(ctx, model_id)
    assert training_jobs.run_training(ctx, job_id) == "failed"
    error = ctx.store.get_job(job_id).error
    assert error is not None and error["type"] == "TrainingError"
    assert "no trainable variables" in error["detail"] and "\n" not in error["detail"]
    assert len(ctx.store.list_models("o")) == 1  # nothing registered


def test_cancel_mid_epoch_ends_the_job_cancelled(ctx: WorkerContext, digits_keras: Path) -> None:
    model_id = _ready_model(ctx, digits_keras)
    # Many small batches: a long run, with a stop check before each batch.
    # No overfitting guard: it may legitimately end a short fgsm-rs run early, before the cancel lands.
    job_id = _job(ctx, model_id, epochs=50, batch_size=8, evaluate=[], overfit_guard=False)
    stages: list[str] = []

    def cancel_once_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = ctx.store.get_job(job_id)
            stage = (job.progress or {}).get("stage", "")
            # Any stage of any epoch: on a fast machine epoch 1 may be over before the first poll.
            if stage.startswith(("epoch ", "validate epoch ")):
                stages.append(stage)
                ctx.store.request_cancel(job_id, owner="o")
                return
            time.sleep(0.1)

    thread = threading.Thread(target=cancel_once_training)
    thread.start()
    started = time.monotonic()
    status = training_jobs.run_training(ctx, job_id)
    thread.join()
    assert stages, "the job never reported training progress"
    assert status == "cancelled" and time.monotonic() - started < 60
    job = ctx.store.get_job(job_id)
    assert job.status == "cancelled" and job.result is None
    assert not training_jobs.work_dir(ctx, job_id).exists()


def test_the_reconciler_resends_a_lost_training_job_as_a_training_task(ctx: WorkerContext) -> None:
    from service.domain.tasks import RUN_TRAINING
    from workers.runtime.reconciler import Reconciler

    job, _ = ctx.store.create_job(owner="o", kind="training", spec={})
    assert ctx.store.claim(job.id, worker="dead", lease_seconds=0.05)
    time.sleep(0.2)
    sent: list[tuple[str, str]] = []
    reconciler = Reconciler(
        ctx.store,
        lambda task, job_id: sent.append((task, job_id)),
        requeue_queued_after_s=60,
        resend_after_s=60,
    )
    assert reconciler.run_once() == [job.id] and sent == [(RUN_TRAINING, job.id)]


def test_a_worker_shutting_down_hands_the_job_back_with_its_checkpoint(
    ctx: WorkerContext, digits_keras: Path, wait_until: Callable[..., None]
) -> None:
    from service.domain.tasks import RUN_TRAINING
    from workers.runtime import heartbeat

    model_id = _ready_model(ctx, digits_keras)
    # Ten epochs: progress reaches the store once a second, and two short epochs could run between two
    # writes, so that no "epoch" stage was ever seen (2026-12-02, twice).
    job_id = _job(ctx, model_id, evaluate=[], epochs=10, batch_size=8, overfit_guard=False)

    def shut_down_once_training() -> None:
        # The child imports TensorFlow and loads the model before its first epoch: a minute or more
        # under load, so the wait is long; it returns at the first epoch written.
        wait_until(
            lambda: (ctx.store.get_job(job_id).progress or {}).get("stage", "").startswith("epoch "),
            timeout=300,
        )
        heartbeat.SHUTTING_DOWN.set()

    thread = threading.Thread(target=shut_down_once_training)
    thread.start()
    try:
        assert training_jobs.run_training(ctx, job_id) is None
    finally:
        thread.join()
        heartbeat.SHUTTING_DOWN.clear()
    job = ctx.store.get_job(job_id)
    assert job.status == "queued" and job.worker is None and list(ctx.send) == [(RUN_TRAINING, job_id)]  # type: ignore[call-overload]
    assert (training_jobs.work_dir(ctx, job_id) / "child" / "checkpoint" / "checkpoint.npz").is_file()
    # The next delivery continues from that checkpoint.
    assert training_jobs.run_training(ctx, job_id) == "succeeded"
    result = ctx.store.get_job(job_id).result
    assert result is not None and result["resumed"]


def test_a_training_whose_artifacts_cannot_be_written_fails_and_registers_no_model(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    model_id = _ready_model(ctx, digits_keras)
    job_id = _job(ctx, model_id)
    # A file where the job's artifact folder must go: no write below it can succeed, even as root.
    (ctx.settings.data_dir / "jobs" / job_id).write_text("in the way")
    models_before = {m.id for m in ctx.store.list_models("o")}

    assert training_jobs.run_training(ctx, job_id) == "failed"
    job = ctx.store.get_job(job_id)
    assert job.error is not None and job.error["type"] == "ArtifactWriteError"
    assert job.error["detail"] == f"the artifact jobs/{job_id}/model.zip could not be written: File exists"
    assert str(ctx.settings.data_dir) not in job.error["detail"]  # no absolute server path
    assert job.result is None
    assert {m.id for m in ctx.store.list_models("o")} == models_before


def test_a_training_warning_reaches_the_job_and_the_registered_model(
    ctx: WorkerContext, digits_keras: Path, tmp_path: Path
) -> None:
    """Data in [0, 1] trained with input_range [0, 255] uses 0.4% of it: the job and the model say so."""
    model_id = _ready_model(ctx, digits_keras)
    digits = load_builtin("builtin:digits:train")
    path = tmp_path / "digits01.npz"
    np.savez(path, x=digits.x, y=digits.y)
    blob = ctx.artifacts.put_file(path)
    dataset, _ = ctx.store.add_dataset(
        owner="o", name="digits01", sha256=blob.sha256, size_bytes=blob.size_bytes,
        num_samples=digits.num_samples, sample_shape=[8, 8, 1], num_classes=10, min_value=0.0, max_value=1.0,
    )  # fmt: skip
    job_id = _job(
        ctx,
        model_id,
        dataset_id=dataset.id,
        validation_dataset_id=dataset.id,
        input_range=[0, 255],
        evaluate=[],
    )
    assert training_jobs.run_training(ctx, job_id) == "succeeded", ctx.store.get_job(job_id).error
    result = ctx.store.get_job(job_id).result
    assert result is not None
    [warning, *_] = result["warnings"]
    assert warning.startswith("training data: ") and "0.4% of input_range [0, 255]" in warning
    assert warning in result["notes"]
    assert ctx.store.get_model(result["model_id"]).warnings == result["warnings"]
