"""An evaluation job run whole by one worker (large ones are split by `sharded.py`)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from service.domain.artifacts import EXAMPLES_ARTIFACT
from service.domain.jobs import JobStatus
from service.domain.specs import EvaluationSpec
from service.domain.tasks import RUN_EVALUATION
from service.store.records import JobRecord
from workers.context import WorkerContext, job_dataset, load_job_model, model_record
from workers.evaluation.engine import EvaluationCancelled, evaluate
from workers.evaluation.examples import examples_npz
from workers.runners.base import WholeJobRunner
from workers.runtime.heartbeat import Heartbeat

log = logging.getLogger(__name__)

# Samples per class kept (with their adversarial versions) for the report page's example grid.
EXAMPLES_PER_CLASS = 2


class EvaluationRunner(WholeJobRunner):
    """An evaluation run whole by one worker: load the model and data, attack, write the artifacts."""

    task = RUN_EVALUATION
    stop_signal = EvaluationCancelled

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any]:
        ctx, job_id = self.ctx, self.key
        spec = EvaluationSpec.model_validate(claim.spec)
        model = load_job_model(ctx, model_record(ctx.store, spec.model_id))
        dataset = job_dataset(ctx, spec.dataset_id)
        options = spec.options()
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
        return result


def run_evaluation(ctx: WorkerContext, job_id: str) -> JobStatus | None:
    """Claim and run one evaluation job; returns its final status, or None when there was nothing to do."""
    return EvaluationRunner(ctx, job_id).run()


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
