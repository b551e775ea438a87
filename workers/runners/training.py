"""What the worker does for an adversarial-training job, kept out of the thin Celery task.

Idempotent like every runner (`base.py`): `claim` decides whether a delivery has anything to do. A job's
checkpoints live in a folder of the data directory named after the job, so a delivery after a worker
died mid-training (on this or another worker sharing the data directory) continues from the last
checkpoint instead of starting over. The robustified model is registered once per job: the id is
kept beside the checkpoints, so a redelivery after registration finds it instead of adding another.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from service.domain.datasets import ArrayDataset
from service.domain.jobs import JobStatus
from service.domain.specs import TrainingSpec
from service.domain.tasks import RUN_TRAINING
from service.errors import NotFound
from service.store.records import JobRecord, ModelRecord
from workers.context import WorkerContext, job_dataset, model_record, requested_output
from workers.models.loading import LoadedModel, load_model
from workers.runners.base import WholeJobRunner
from workers.runtime.heartbeat import Heartbeat
from workers.training import TrainingCancelled, TrainingOutcome, split_validation, train

log = logging.getLogger(__name__)

REGISTERED = "registered.json"


def work_dir(ctx: WorkerContext, job_id: str) -> Path:
    """The job's checkpoints and exports; not a job artifact, removed once the job has ended."""
    return ctx.settings.data_dir / "training" / job_id


class TrainingRunner(WholeJobRunner):
    """An adversarial training: train from the checkpoint if any, register the model, write artifacts."""

    task = RUN_TRAINING
    stop_signal = TrainingCancelled

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any]:
        ctx, job_id = self.ctx, self.key
        folder = work_dir(ctx, job_id)
        spec = TrainingSpec.model_validate(claim.spec)
        record = model_record(ctx.store, spec.model_id)
        model = _fresh_model(ctx, record)
        train_data, val_data = _data(ctx, spec)
        log.info(
            "job %s: %s training of model %s (sha256 %s) on %s (%d samples), validation %s (%d)",
            job_id, spec.method, record.id, record.sha256, spec.dataset_id, train_data.num_samples,
            spec.validation_dataset_id or "held out", val_data.num_samples,
        )  # fmt: skip
        outcome = train(
            model,
            train_data,
            val_data,
            spec.options(),
            checkpoint_dir=folder / "checkpoint",
            export_dir=folder / "export",
            progress=heartbeat.update,
            should_stop=heartbeat.should_stop,
        )
        if outcome.result.resumed:
            log.info("job %s: resumed from its checkpoint", job_id)
        return _register(ctx, claim, record, outcome, folder)

    def ended(self, claim: JobRecord, status: JobStatus) -> JobStatus | None:
        # The job has ended: nothing will resume from its checkpoints. (When the finish is refused the
        # job is another worker's, and so are its checkpoints: `ended` is not called then.)
        shutil.rmtree(work_dir(self.ctx, self.key), ignore_errors=True)
        return super().ended(claim, status)


def run_training(ctx: WorkerContext, job_id: str) -> JobStatus | None:
    """Claim and run one training job; returns its final status, or None when there was nothing to do."""
    return TrainingRunner(ctx, job_id).run()


def _fresh_model(ctx: WorkerContext, record: ModelRecord) -> LoadedModel:
    # Training changes weights in place: never the cached copy that evaluations share.
    return load_model(
        ctx.artifacts.blob_path(record.sha256),
        output=requested_output(record.output),
        sha256=record.sha256,
        work_dir=ctx.settings.data_dir / "models" / record.sha256,
    )


def _data(ctx: WorkerContext, spec: TrainingSpec) -> tuple[ArrayDataset, ArrayDataset]:
    data = job_dataset(ctx, spec.dataset_id)
    if spec.validation_dataset_id is None:
        return split_validation(data, seed=spec.seed)
    return data, job_dataset(ctx, spec.validation_dataset_id)


def _register(
    ctx: WorkerContext, job: JobRecord, source: ModelRecord, outcome: TrainingOutcome, folder: Path
) -> dict[str, Any]:
    """Register the robustified model of the job's owner and write the job's artifacts; the result.

    The model becomes ready only once every artifact is written: a job that fails here registers
    nothing (a model it added is deleted), so no `ready` model stands beside a failed job. The same
    model on every delivery: its id is kept beside the checkpoints.
    """
    marker = folder / REGISTERED
    if marker.is_file():
        try:
            registered = ctx.store.get_model(json.loads(marker.read_text())["model_id"])
            return _write_artifacts(ctx, job.id, registered, outcome)
        except (NotFound, ValueError, KeyError):
            log.warning("job %s: the model registered by an earlier run is gone; registering again", job.id)
    model = outcome.model
    blob = ctx.artifacts.put_file(outcome.saved_model_zip)
    record, created = ctx.store.add_model(
        owner=job.owner,
        name=f"{source.name}-{outcome.result.method}"[:500],
        sha256=blob.sha256,
        format="saved_model",
        size_bytes=blob.size_bytes,
        output=model.output,
        warnings=outcome.result.warnings,  # a model worse than its upload says so wherever it is listed
    )
    try:
        result = _write_artifacts(ctx, job.id, record, outcome)
    except BaseException:
        if created:
            ctx.store.delete_model(record.id, owner=job.owner)
            log.info(
                "job %s: model %s deleted again: the job's artifacts could not be written", job.id, record.id
            )
        raise
    if record.status != "ready":
        # Our own export of a validated model: its shapes are known, no validation round trip needed.
        ctx.store.set_model_ready(
            record.id,
            input_shape=list(model.input_shape),
            num_classes=model.num_classes,
            output=model.output,
            trainable=True,
        )
    marker.write_text(json.dumps({"model_id": record.id, "sha256": blob.sha256}))
    log.info(
        "job %s: robustified model %s %s (sha256 %s) from model %s",
        job.id, record.id, "registered" if created else "already registered", blob.sha256, source.id,
    )  # fmt: skip
    return result


def _write_artifacts(
    ctx: WorkerContext, job_id: str, model: ModelRecord, outcome: TrainingOutcome
) -> dict[str, Any]:
    """The job's artifacts and its result, which names the registered model."""
    result = outcome.result.model_copy(update={"model_id": model.id}).model_dump(mode="json")
    # The archive is the registered blob itself, so the artifact and the Model are the same bytes.
    ctx.artifacts.write_job_artifact(job_id, "model.zip", ctx.artifacts.blob_path(model.sha256))
    if outcome.keras_path is not None:
        ctx.artifacts.write_job_artifact(job_id, "model.keras", outcome.keras_path)
    ctx.artifacts.write_job_artifact(job_id, "report.json", json.dumps(result, indent=2).encode())
    return result
