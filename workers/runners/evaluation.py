"""An evaluation job run whole by one worker (large ones are split by `sharded.py`)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from service.domain.artifacts import EXAMPLES_ARTIFACT
from service.domain.jobs import JobStatus
from service.domain.results import EvaluationResult
from service.domain.specs import EvaluationSpec
from service.domain.tasks import RUN_EVALUATION
from service.store.records import JobRecord
from workers.context import WorkerContext, dataset_arg, model_record, model_ref, ood_dataset_arg
from workers.evaluation.examples import examples_npz
from workers.runners.base import WholeJobRunner
from workers.runtime.heartbeat import Heartbeat
from workers.sandbox.protocol import EXAMPLES_FILE, PER_SAMPLE_FILE

log = logging.getLogger(__name__)

# Samples per class kept (with their adversarial versions) for the report page's example grid.
EXAMPLES_PER_CLASS = 2


class EvaluationRunner(WholeJobRunner):
    """An evaluation run whole by one worker: the child attacks, the worker writes the artifacts."""

    task = RUN_EVALUATION

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any]:
        ctx, job_id = self.ctx, self.key
        spec = EvaluationSpec.model_validate(claim.spec)
        record = model_record(ctx.store, spec.model_id)
        log.info(
            "job %s: evaluating model %s (sha256 %s) on %s",
            job_id,
            spec.model_id,
            record.sha256,
            spec.dataset_id,
        )
        with ctx.children.session(model_ref(ctx, record), heartbeat, what=f"job {job_id}") as session:
            value = session.call(
                "evaluate",
                {
                    "dataset": dataset_arg(ctx, session, spec.dataset_id),
                    "spec": claim.spec,
                    "keep_examples": EXAMPLES_PER_CLASS,
                    **ood_dataset_arg(ctx, session, spec),
                },
            )
            result = EvaluationResult.model_validate(value).model_dump(mode="json")
            per_sample = session.arrays(PER_SAMPLE_FILE)
            examples = session.arrays(EXAMPLES_FILE) if (session.out / EXAMPLES_FILE).is_file() else None
        write_evaluation_artifacts(ctx, job_id, result, per_sample, examples)
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
