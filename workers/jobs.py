"""What the worker does for a model validation and an evaluation job, kept out of the thin Celery tasks.

Every function here is idempotent: the job row in the store decides whether there is anything to do
(`claim` answers None for a job that is finished, cancelled or held by another live worker), so a
redelivered or re-enqueued message is harmless.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from service.artifacts import ArtifactStore
from service.broker import DELIVER_CALLBACK, RUN_EVALUATION
from service.datasets import ArrayDataset, DatasetError, is_builtin, load_builtin, load_npz
from service.db import DEFAULT_MAX_ATTEMPTS
from service.errors import NotFound
from service.schemas import EvaluationOptions, EvaluationSpec, Progress
from service.settings import Settings
from service.store import JobStore, ModelRecord
from workers.evaluation import EvaluationCancelled, EvaluationError, evaluate
from workers.examples import EXAMPLES_ARTIFACT, examples_npz
from workers.heartbeat import Heartbeat, lease_heartbeat
from workers.model_cache import ModelCache
from workers.models import LoadedModel, ModelLoadError, load_model

log = logging.getLogger(__name__)

# Samples per class kept (with their adversarial versions) for the report page's example grid.
EXAMPLES_PER_CLASS = 2

INTERNAL_ERROR = (
    "the worker hit an internal error while running this job; the operator's worker log has details"
)


@dataclass
class WorkerContext:
    """What a worker process shares between its jobs."""

    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    models: ModelCache[LoadedModel]
    worker: str
    # Sends a follow-up task by name (job id as its one argument); Celery's send_task in a worker.
    send: Callable[[str, str], None]


MAX_VALIDATION_ATTEMPTS = DEFAULT_MAX_ATTEMPTS


def validate_model(ctx: WorkerContext, model_id: str) -> str | None:
    """Load an uploaded model once and mark it ready (with its shapes) or rejected (with a sentence)."""
    try:
        record = ctx.store.get_model(model_id)
    except NotFound:
        log.warning("model %s: not in the store (deleted?); nothing to validate", model_id)
        return None
    if record.status != "validating":
        return record.status
    attempts = ctx.store.start_model_validation(model_id)
    if attempts is None:  # another worker settled it meanwhile
        return ctx.store.get_model(model_id).status
    if attempts > MAX_VALIDATION_ATTEMPTS:
        # Every earlier worker died loading it (a redelivered message is the only way to get here twice).
        reason = (
            f"validating this model stopped the worker {attempts - 1} times (killed or crashed while "
            "loading it), so it is rejected instead of being tried again"
        )
        log.warning("model %s (sha256 %s): rejected: %s", model_id, record.sha256, reason)
        ctx.store.set_model_rejected(model_id, reason=reason)
        return "rejected"
    try:
        model = _load(ctx, record)
    except ModelLoadError as exc:
        log.info("model %s (sha256 %s): rejected: %s", model_id, record.sha256, exc)
        ctx.store.set_model_rejected(model_id, reason=str(exc))
        return "rejected"
    except Exception:
        log.exception("model %s (sha256 %s): unexpected error while loading", model_id, record.sha256)
        ctx.store.set_model_rejected(
            model_id, reason="the model could not be loaded because of an unexpected error in the worker"
        )
        return "rejected"
    ctx.store.set_model_ready(
        model_id,
        input_shape=list(model.input_shape),
        num_classes=model.num_classes,
        output=model.output,
        trainable=_trainable(model, model_id),
    )
    # Jobs look the model up by the output kind found here, so the first job on it starts warm.
    ctx.models.put(cache_key(record.sha256, model.output), model)
    log.info(
        "model %s (sha256 %s): ready, %s, input %s, %d classes, %s",
        model_id, record.sha256, model.format, model.input_shape, model.num_classes, model.output,
    )  # fmt: skip
    return "ready"


def _trainable(model: LoadedModel, model_id: str) -> bool | None:
    """Whether adversarial training could update the model (POST /v1/trainings refuses it at once if not)."""
    from workers.training import TrainingError, trainable_variables  # the training engine, only here

    try:
        trainable_variables(model)
    except TrainingError as exc:
        log.info("model %s: cannot be trained: %s", model_id, exc)
        return False
    except Exception:  # unknown: leave it to the training job, which says why in a sentence
        log.warning("model %s: could not tell whether it is trainable", model_id, exc_info=True)
        return None
    return True


def job_heartbeat(ctx: WorkerContext, job_id: str) -> Heartbeat:
    """The heartbeat of a job this worker has claimed: writes its progress and renews the lease."""

    def report(progress: Progress) -> bool:
        return bool(
            ctx.store.report_progress(
                job_id, worker=ctx.worker, progress=progress, lease_seconds=ctx.settings.job_lease_s
            )
        )

    return lease_heartbeat(report, ctx.settings)


def run_evaluation(ctx: WorkerContext, job_id: str) -> str | None:
    """Claim and run one evaluation job; returns its final status, or None when there was nothing to do."""
    settings, store = ctx.settings, ctx.store
    job = store.claim(job_id, worker=ctx.worker, lease_seconds=settings.job_lease_s)
    if job is None:
        log.info("job %s: not claimed (finished, cancelled, or running on another worker)", job_id)
        return None
    log.info("job %s: claimed by %s", job_id, ctx.worker)

    heartbeat = job_heartbeat(ctx, job_id)
    status, result, error = "failed", None, None
    try:
        with heartbeat:
            spec = EvaluationSpec.model_validate(job.spec)
            model = _load(ctx, _model_record(store, spec.model_id))
            dataset = _dataset(ctx, spec.dataset_id)
            options = EvaluationOptions.model_validate(
                spec.model_dump(include=set(EvaluationOptions.model_fields))
            )
            samples = dataset.take(spec.max_samples).num_samples
            log.info(
                "job %s: evaluating model %s (sha256 %s) on %s (%d samples)",
                job_id, spec.model_id, model.sha256, spec.dataset_id, samples,
            )  # fmt: skip
            outcome = evaluate(
                model,
                dataset,
                options,
                progress=heartbeat.update,
                should_stop=heartbeat.should_stop,
                keep_examples=EXAMPLES_PER_CLASS,
            )
        result = outcome.result.model_dump(mode="json")
        _write_artifacts(ctx, job_id, result, outcome.per_sample, outcome.examples)
        status = "succeeded"
    except EvaluationCancelled:
        stopped = heartbeat.stopped()
        if stopped is None:
            # Hand the job back and send it again: this delivery is acknowledged when the task returns.
            store.release(job_id, worker=ctx.worker)
            ctx.send(RUN_EVALUATION, job_id)
            log.info("job %s: handed back to the queue (worker shutting down)", job_id)
            return None
        status, error = stopped
    except (ModelLoadError, DatasetError, EvaluationError) as exc:
        log.info("job %s: failed: %s: %s", job_id, type(exc).__name__, exc)
        error = _error(type(exc).__name__, str(exc))
    except Exception:
        log.exception("job %s: unexpected error", job_id)
        error = _error("InternalError", INTERNAL_ERROR)

    finished = store.finish(job_id, worker=ctx.worker, status=status, result=result, error=error)
    if not finished:
        # Lease lost (another worker took the job over) or already finished: the row is not ours to write.
        log.warning("job %s: ended %s here but the store refused the result (lease lost?)", job_id, status)
        return None
    log.info("job %s: %s", job_id, status)
    if job.spec.get("callback_url"):
        ctx.send(DELIVER_CALLBACK, job_id)
    return status


def _error(kind: str, detail: str) -> dict[str, str]:
    return {"type": kind, "detail": detail}


def _model_record(store: JobStore, model_id: str) -> ModelRecord:
    try:
        record = store.get_model(model_id)
    except NotFound as exc:
        raise ModelLoadError(f"model {model_id} no longer exists") from exc
    if record.status == "rejected":
        raise ModelLoadError(f"model {model_id} was rejected: {record.rejection}")
    return record


def _load(ctx: WorkerContext, record: ModelRecord) -> LoadedModel:
    def load() -> LoadedModel:
        # SavedModel archives are extracted once per sha into data_dir/models/<sha>/.
        work_dir = ctx.settings.data_dir / "models" / record.sha256
        return load_model(
            ctx.artifacts.blob_path(record.sha256),  # load_model tells the format from the content
            # Before validation this is what the uploader asked for (maybe "auto"); after, what was found.
            output=_requested_output(record.output),
            sha256=record.sha256,
            work_dir=work_dir,
        )

    return ctx.models.get_or_load(cache_key(record.sha256, record.output), load)


def cache_key(sha256: str, output: str) -> str:
    # Two owners may upload the same bytes and tell different output kinds: they are different models.
    return f"{sha256}:{output}"


def _requested_output(value: str) -> Literal["auto", "logits", "probabilities"]:
    if value == "logits":
        return "logits"
    return "probabilities" if value == "probabilities" else "auto"


def _dataset(ctx: WorkerContext, dataset_id: str) -> ArrayDataset:
    if is_builtin(dataset_id):
        return _builtin(dataset_id)
    try:
        record = ctx.store.get_dataset(dataset_id)
    except NotFound as exc:
        raise DatasetError(f"dataset {dataset_id} no longer exists") from exc
    return load_npz(ctx.artifacts.blob_path(record.sha256))


@lru_cache(maxsize=8)
def _builtin(ref: str) -> ArrayDataset:
    return load_builtin(ref)


def _write_artifacts(
    ctx: WorkerContext,
    job_id: str,
    result: dict[str, Any],
    per_sample: dict[str, Any],
    examples: dict[str, Any] | None = None,
) -> None:
    # Same names on a rerun, so a rerun overwrites rather than adds.
    ctx.artifacts.write_job_artifact(job_id, "report.json", json.dumps(result, indent=2).encode())
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {name: np.asarray(values) for name, values in per_sample.items()}
    np.savez(buffer, **arrays)
    ctx.artifacts.write_job_artifact(job_id, "per_sample.npz", buffer.getvalue())
    if examples is not None:
        ctx.artifacts.write_job_artifact(job_id, EXAMPLES_ARTIFACT, examples_npz(examples))
