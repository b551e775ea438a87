"""What the worker does for an evaluation job, kept out of the thin Celery tasks.

Every function here is idempotent: the job row in the store decides whether there is anything to do
(`claim` answers None for a job that is finished, cancelled or held by another live worker), so a
redelivered or re-enqueued message is harmless.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from service.domain.artifacts import EXAMPLES_ARTIFACT
from service.domain.datasets import DatasetError
from service.domain.specs import EvaluationOptions, EvaluationSpec
from service.domain.tasks import DELIVER_CALLBACK, RUN_EVALUATION
from workers.context import (
    INTERNAL_ERROR,
    WorkerContext,
    job_dataset,
    job_error,
    job_heartbeat,
    load_job_model,
    model_record,
)
from workers.evaluation.engine import EvaluationCancelled, EvaluationError, evaluate
from workers.evaluation.examples import examples_npz
from workers.models.errors import ModelLoadError

log = logging.getLogger(__name__)

# Samples per class kept (with their adversarial versions) for the report page's example grid.
EXAMPLES_PER_CLASS = 2


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
            model = load_job_model(ctx, model_record(store, spec.model_id))
            dataset = job_dataset(ctx, spec.dataset_id)
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
        write_evaluation_artifacts(ctx, job_id, result, outcome.per_sample, outcome.examples)
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
        error = job_error(type(exc).__name__, str(exc))
    except Exception:
        log.exception("job %s: unexpected error", job_id)
        error = job_error("InternalError", INTERNAL_ERROR)

    finished = store.finish(job_id, worker=ctx.worker, status=status, result=result, error=error)
    if not finished:
        # Lease lost (another worker took the job over) or already finished: the row is not ours to write.
        log.warning("job %s: ended %s here but the store refused the result (lease lost?)", job_id, status)
        return None
    log.info("job %s: %s", job_id, status)
    if job.spec.get("callback_url"):
        ctx.send(DELIVER_CALLBACK, job_id)
    return status


def write_evaluation_artifacts(
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
