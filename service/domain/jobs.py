"""A job's life: its statuses, the transitions between them, its phase, and the kinds of error it ends with.

The store (`service/store/lifecycle.py`) is the one place that changes a job's row, and it checks every
change it makes against `TRANSITIONS`; the API, the CLI and the workers read these names instead of
spelling statuses. Standard library only: the light client install imports it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from service.domain.messages import without_server_paths


class JobStatus(StrEnum):
    """Where a job is; the v1 contract (docs/api.md) names these five; clients depend on them."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)

# Which status may follow which. RUNNING -> RUNNING is a takeover: another worker claims a job whose
# worker died (lease expired), or a sharded job changes hands between its coordinator, its shards and
# its merging worker. QUEUED -> FAILED is a job whose attempts are used up before it could start again.
# A job created from a reused result starts SUCCEEDED; nothing leaves a terminal status.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(source: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[source]


class JobPhase(StrEnum):
    """Who holds a running job, when it is not a single worker with a lease (the `phase` column).

    NULL (no phase): the job runs whole, or its coordinator or merging worker holds it with a lease.
    """

    SHARDED = "sharded"  # an evaluation whose shards carry the leases; no worker holds the job itself


class ErrorType(StrEnum):
    """`error.type` of a failed job: a public, documented list (docs/api.md), held to this enum by a test.

    The first six are the spellings jobs have always had; new kinds are added at the end.
    """

    MODEL_LOAD_ERROR = "ModelLoadError"  # the model cannot be loaded or does not fit the data
    DATASET_ERROR = "DatasetError"  # the dataset cannot be read or does not fit the model
    EVALUATION_ERROR = "EvaluationError"  # the evaluation cannot run as asked (say, eps outside the range)
    INTERNAL_ERROR = "InternalError"  # a bug or an environment fault; the worker log has the traceback
    TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"  # the job ran longer than the worker's time limit
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # its worker died on every attempt (killed, out of memory)
    TRAINING_ERROR = "TrainingError"  # the adversarial training cannot run as asked, or diverged
    ARTIFACT_WRITE_ERROR = "ArtifactWriteError"  # a result file could not be written (disk full, ...)
    MODEL_CRASHED = "ModelCrashed"  # the model's sandboxed process died (a resource limit, or a crash)


def job_error(kind: ErrorType, detail: str) -> dict[str, str]:
    """The `error` object of a failed job; its sentence names no absolute server path."""
    return {"type": kind.value, "detail": without_server_paths(detail)}
