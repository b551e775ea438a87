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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.domain.jobs import ErrorType, JobStatus
from service.domain.results import TrainingResult
from service.domain.specs import TrainingSpec
from service.domain.tasks import RUN_TRAINING
from service.errors import NotFound
from service.store.records import JobRecord, ModelRecord
from workers.context import WorkerContext, dataset_arg, model_record, model_ref
from workers.runners.base import WholeJobRunner
from workers.runners.validation import validate_model
from workers.runtime.heartbeat import Heartbeat
from workers.sandbox.protocol import ChildError

log = logging.getLogger(__name__)

REGISTERED = "registered.json"


def work_dir(ctx: WorkerContext, job_id: str) -> Path:
    """The job's checkpoints and exports; not a job artifact, removed once the job has ended."""
    return ctx.settings.data_dir / "training" / job_id


class TrainingRunner(WholeJobRunner):
    """An adversarial training: train from the checkpoint if any, register the model, write artifacts."""

    task = RUN_TRAINING

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any]:
        ctx, job_id = self.ctx, self.key
        folder = work_dir(ctx, job_id)
        # The child writes its checkpoints and exports here, and nowhere else of the data directory; the
        # registration marker beside it is the worker's alone.
        writable = folder / "child"
        writable.mkdir(parents=True, exist_ok=True)
        spec = TrainingSpec.model_validate(claim.spec)
        record = model_record(ctx.store, spec.model_id)
        with ctx.children.session(
            model_ref(ctx, record), heartbeat, what=f"job {job_id}", writes=[writable], reuse=False
        ) as session:
            validation = spec.validation_dataset_id
            value = session.call(
                "train",
                {
                    "dataset": dataset_arg(ctx, session, spec.dataset_id),
                    "validation": None if validation is None else dataset_arg(ctx, session, validation),
                    "spec": claim.spec,
                    "folder": str(writable),
                },
            )
        trained = _Trained.of(value, writable)
        log.info(
            "job %s: %s training of model %s (sha256 %s) on %s (%d samples), validation %s (%d)%s",
            job_id, spec.method, record.id, record.sha256, spec.dataset_id, value["train_samples"],
            validation or "held out", value["validation_samples"],
            ", resumed from its checkpoint" if trained.result.resumed else "",
        )  # fmt: skip
        return _register(ctx, claim, record, trained, folder)

    def ended(self, claim: JobRecord, status: JobStatus) -> JobStatus | None:
        # The job has ended: nothing will resume from its checkpoints. (When the finish is refused the
        # job is another worker's, and so are its checkpoints: `ended` is not called then.)
        shutil.rmtree(work_dir(self.ctx, self.key), ignore_errors=True)
        return super().ended(claim, status)


def run_training(ctx: WorkerContext, job_id: str) -> JobStatus | None:
    """Claim and run one training job; returns its final status, or None when there was nothing to do."""
    return TrainingRunner(ctx, job_id).run()


@dataclass(frozen=True)
class _Trained:
    """What the child's training answered, checked: its result and its exports inside its own folder."""

    result: TrainingResult
    saved_model_zip: Path
    keras_path: Path | None

    @classmethod
    def of(cls, value: dict[str, Any], folder: Path) -> _Trained:
        def inside(path: Any) -> Path:
            resolved = Path(str(path)).resolve()
            if not resolved.is_relative_to(folder.resolve()) or not resolved.is_file():
                raise ChildError(
                    ErrorType.MODEL_CRASHED, "the training's process named an export outside its folder"
                )
            return resolved

        keras = value.get("keras_path")
        return cls(
            TrainingResult.model_validate(value["result"]),
            inside(value["saved_model_zip"]),
            None if keras is None else inside(keras),
        )


def _register(
    ctx: WorkerContext, job: JobRecord, source: ModelRecord, trained: _Trained, folder: Path
) -> dict[str, Any]:
    """Register the robustified model of the job's owner and write the job's artifacts; the result.

    The export was written by the model's child process, so it is validated like an upload (in a child of
    its own) before it becomes ready, and only once every artifact is written: a job that fails here
    registers nothing (a model it added is deleted), so no `ready` model stands beside a failed job. The
    same model on every delivery: its id is kept beside the checkpoints, where the child cannot write.
    """
    marker = folder / REGISTERED
    if marker.is_file():
        try:
            model_id = json.loads(marker.read_text())["model_id"]
            registered = ctx.store.get_model(model_id, owner=job.owner)
            return _write_artifacts(ctx, job.id, registered, trained)
        except (NotFound, ValueError, KeyError):
            log.warning("job %s: the model registered by an earlier run is gone; registering again", job.id)
    blob = ctx.artifacts.put_file(trained.saved_model_zip)
    record, created = ctx.store.add_model(
        owner=job.owner,
        name=f"{source.name}-{trained.result.method}"[:500],
        sha256=blob.sha256,
        format="saved_model",
        size_bytes=blob.size_bytes,
        output=source.output,
        warnings=trained.result.warnings,  # a model worse than its upload says so wherever it is listed
    )
    try:
        result = _write_artifacts(ctx, job.id, record, trained)
        if record.status != "ready" and validate_model(ctx, record.id) != "ready":
            rejected = ctx.store.get_model(record.id)
            raise ChildError(
                ErrorType.TRAINING_ERROR, f"the trained model did not pass validation: {rejected.rejection}"
            )
    except BaseException:
        if created:
            ctx.store.delete_model(record.id, owner=job.owner)
            log.info("job %s: model %s deleted again: the job could not complete", job.id, record.id)
        raise
    marker.write_text(json.dumps({"model_id": record.id, "sha256": blob.sha256}))
    log.info(
        "job %s: robustified model %s %s (sha256 %s) from model %s",
        job.id, record.id, "registered" if created else "already registered", blob.sha256, source.id,
    )  # fmt: skip
    return result


def _write_artifacts(
    ctx: WorkerContext, job_id: str, model: ModelRecord, trained: _Trained
) -> dict[str, Any]:
    """The job's artifacts and its result, which names the registered model."""
    result = trained.result.model_copy(update={"model_id": model.id}).model_dump(mode="json")
    # The archive is the registered blob itself, so the artifact and the Model are the same bytes.
    ctx.artifacts.write_job_artifact(job_id, "model.zip", ctx.artifacts.blob_path(model.sha256))
    if trained.keras_path is not None:
        ctx.artifacts.write_job_artifact(job_id, "model.keras", trained.keras_path)
    ctx.artifacts.write_job_artifact(job_id, "report.json", json.dumps(result, indent=2).encode())
    return result
