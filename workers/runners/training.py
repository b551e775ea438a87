"""What the worker does for an adversarial-training job, kept out of the thin Celery task.

Idempotent like `workers.jobs`: `claim` decides whether a delivery has anything to do. A job's
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

from service.domain.datasets import ArrayDataset, DatasetError
from service.domain.specs import TrainingOptions, TrainingSpec
from service.domain.tasks import DELIVER_CALLBACK, RUN_TRAINING
from service.errors import NotFound
from service.store.records import JobRecord, ModelRecord
from workers.context import (
    INTERNAL_ERROR,
    WorkerContext,
    job_dataset,
    job_error,
    job_heartbeat,
    model_record,
    requested_output,
)
from workers.models.errors import ModelLoadError
from workers.models.loading import LoadedModel, load_model
from workers.training import TrainingCancelled, TrainingError, TrainingOutcome, split_validation, train

log = logging.getLogger(__name__)

REGISTERED = "registered.json"


def work_dir(ctx: WorkerContext, job_id: str) -> Path:
    """The job's checkpoints and exports; not a job artifact, removed once the job has ended."""
    return ctx.settings.data_dir / "training" / job_id


def run_training(ctx: WorkerContext, job_id: str) -> str | None:
    """Claim and run one training job; returns its final status, or None when there was nothing to do."""
    settings, store = ctx.settings, ctx.store
    job = store.claim(job_id, worker=ctx.worker, lease_seconds=settings.job_lease_s)
    if job is None:
        log.info("job %s: not claimed (finished, cancelled, or running on another worker)", job_id)
        return None
    log.info("job %s: claimed by %s (attempt %d)", job_id, ctx.worker, job.attempts)

    heartbeat = job_heartbeat(ctx, job_id)
    folder = work_dir(ctx, job_id)
    status, result, error = "failed", None, None
    model_id = job.spec.get("model_id")
    try:
        with heartbeat:
            spec = TrainingSpec.model_validate(job.spec)
            record = model_record(store, spec.model_id)
            model = _fresh_model(ctx, record)
            train_data, val_data = _data(ctx, spec)
            options = TrainingOptions.model_validate(
                spec.model_dump(include=set(TrainingOptions.model_fields))
            )
            log.info(
                "job %s: %s training of model %s (sha256 %s) on %s (%d samples), validation %s (%d)",
                job_id, spec.method, record.id, record.sha256, spec.dataset_id, train_data.num_samples,
                spec.validation_dataset_id or "held out", val_data.num_samples,
            )  # fmt: skip
            outcome = train(
                model,
                train_data,
                val_data,
                options,
                checkpoint_dir=folder / "checkpoint",
                export_dir=folder / "export",
                progress=heartbeat.update,
                should_stop=heartbeat.should_stop,
            )
            if outcome.result.resumed:
                log.info("job %s: resumed from its checkpoint", job_id)
            new_model = _register(ctx, job, record, outcome, folder)
        result = outcome.result.model_copy(update={"model_id": new_model.id}).model_dump(mode="json")
        _write_artifacts(ctx, job_id, result, new_model, outcome)
        status = "succeeded"
    except TrainingCancelled:
        stopped = heartbeat.stopped()
        if stopped is None:
            # Hand the job back; its checkpoint stays, so the next delivery continues from it.
            store.release(job_id, worker=ctx.worker)
            ctx.send(RUN_TRAINING, job_id)
            log.info("job %s: handed back to the queue (worker shutting down)", job_id)
            return None
        status, error = stopped
    except (ModelLoadError, DatasetError, TrainingError) as exc:
        log.info("job %s: training of model %s failed: %s: %s", job_id, model_id, type(exc).__name__, exc)
        error = job_error(type(exc).__name__, str(exc))
    except Exception:
        log.exception("job %s: unexpected error while training model %s", job_id, model_id)
        error = job_error("InternalError", INTERNAL_ERROR)

    finished = store.finish(job_id, worker=ctx.worker, status=status, result=result, error=error)
    if not finished:
        # Lease lost (another worker took the job over): its checkpoints are that worker's now.
        log.warning("job %s: ended %s here but the store refused the result (lease lost?)", job_id, status)
        return None
    shutil.rmtree(folder, ignore_errors=True)  # the job has ended: nothing will resume from it
    log.info("job %s: %s", job_id, status)
    if job.spec.get("callback_url"):
        ctx.send(DELIVER_CALLBACK, job_id)
    return status


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
) -> ModelRecord:
    """The robustified model as a ready Model of the job's owner; the same one on every delivery."""
    marker = folder / REGISTERED
    if marker.is_file():
        try:
            return ctx.store.get_model(json.loads(marker.read_text())["model_id"])
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
    )
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
    return ctx.store.get_model(record.id)


def _write_artifacts(
    ctx: WorkerContext, job_id: str, result: dict[str, object], model: ModelRecord, outcome: TrainingOutcome
) -> None:
    # The archive is the registered blob itself, so the artifact and the Model are the same bytes.
    ctx.artifacts.write_job_artifact(job_id, "model.zip", ctx.artifacts.blob_path(model.sha256))
    if outcome.keras_path is not None:
        ctx.artifacts.write_job_artifact(job_id, "model.keras", outcome.keras_path)
    ctx.artifacts.write_job_artifact(job_id, "report.json", json.dumps(result, indent=2).encode())
