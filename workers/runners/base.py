"""The one way a worker runs a job: claim -> heartbeat -> work -> finish -> callback, once.

Each kind of job (an evaluation, a training, the coordinator of a sharded evaluation, one shard) is a
`JobRunner` subclass that says how to do its work and, where it differs, how to claim, report and
finish; the order of the steps, the error handling and the hand-back on shutdown are written here only.
Every step is idempotent: the row in the store decides whether a delivery has anything to do, so a
redelivered or re-enqueued message is harmless.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from service.domain.datasets import DatasetError
from service.domain.jobs import ErrorType, JobStatus, job_error
from service.domain.tasks import DELIVER_CALLBACK
from service.store.artifacts import ArtifactWriteFailed
from service.store.records import JobRecord
from workers.context import INTERNAL_ERROR, WorkerContext, job_heartbeat
from workers.models.errors import ModelLoadError
from workers.runtime.heartbeat import Heartbeat
from workers.sandbox.protocol import ChildError, ChildStopped

log = logging.getLogger(__name__)

Claim = TypeVar("Claim")

# The error type of each failure in the worker itself with a sentence of its own (the user's input, or a
# disk the operator must fix); the model's child process names its own (`ChildError.kind`); anything else
# is an InternalError.
_USER_ERRORS: dict[type[Exception], ErrorType] = {
    ModelLoadError: ErrorType.MODEL_LOAD_ERROR,
    DatasetError: ErrorType.DATASET_ERROR,
    ArtifactWriteFailed: ErrorType.ARTIFACT_WRITE_ERROR,
}


def user_error_type(exc: BaseException) -> ErrorType | None:
    """The documented error type of a failure with a sentence of its own, or None for anything else."""
    if isinstance(exc, ChildError):
        return None if exc.kind == ErrorType.INTERNAL_ERROR else exc.kind
    for cls, kind in _USER_ERRORS.items():
        if isinstance(exc, cls):
            return kind
    return None


class HandedOn(Exception):
    """Raised by `work` when the job does not end here: it goes on elsewhere (its shards), or it turned
    out not to be this worker's any more. `run` returns `status` without finishing anything."""

    def __init__(self, status: JobStatus | None) -> None:
        super().__init__(status)
        self.status = status


class JobRunner(ABC, Generic[Claim]):
    """One delivery of one task for one job (or shard), from claim to callback.

    Subclasses set `task` (what is sent again when the worker hands the job back on shutdown) and `noun`
    (what a time-limit error calls the work), and implement `work`. The other hooks default to a whole
    job. Work that touches the model does it in a child process (`workers/sandbox/`); when the heartbeat
    says stop, the child is killed and the work raises `ChildStopped`.
    """

    task: ClassVar[str]
    noun: ClassVar[str] = "the job"

    def __init__(self, ctx: WorkerContext, key: str) -> None:
        self.ctx = ctx
        self.key = key  # the job id, or a shard's key

    # ---- the hooks ---------------------------------------------------------------------------------

    @abstractmethod
    def claim(self) -> Claim | None:
        """Take the job (or shard) for this worker; None when there is nothing to do here."""

    def unclaimed(self) -> None:
        log.info("job %s: not claimed (finished, cancelled, or running on another worker)", self.key)

    def heartbeat(self) -> Heartbeat:
        return job_heartbeat(self.ctx, self.key)

    @abstractmethod
    def work(self, claim: Claim, heartbeat: Heartbeat) -> dict[str, Any] | None:
        """Do the job under its heartbeat and return its result (written as the job's result)."""

    def release(self) -> None:
        self.ctx.store.release(self.key, worker=self.ctx.worker)

    def finish(
        self, claim: Claim, status: JobStatus, result: dict[str, Any] | None, error: dict[str, Any] | None
    ) -> bool:
        return self.ctx.store.finish(
            self.key, worker=self.ctx.worker, status=status, result=result, error=error
        )

    def ended(self, claim: Claim, status: JobStatus) -> JobStatus | None:
        """After the finish applied: send the callback the job asked for."""
        if isinstance(claim, JobRecord) and claim.spec.get("callback_url"):
            self.ctx.send(DELIVER_CALLBACK, self.key)
        return status

    def settle(self, exc: Exception) -> tuple[JobStatus, dict[str, Any] | None] | None:
        """How this kind of work ends on an exception of its own; None leaves it to the common rules."""
        return None

    def describe(self, claim: Claim) -> str:
        """Who is failing, for the logs: the job, and its model when it has one."""
        model_id = claim.spec.get("model_id") if isinstance(claim, JobRecord) else None
        return f"job {self.key}" + (f" (model {model_id})" if model_id else "")

    # ---- the skeleton ------------------------------------------------------------------------------

    def run(self) -> JobStatus | None:
        """Run the delivery; its final status, RUNNING when handed on, or None when nothing was done here."""
        claim = self.claim()
        if claim is None:
            self.unclaimed()
            return None
        log.info("%s: claimed by %s", self.describe(claim), self.ctx.worker)
        heartbeat = self.heartbeat()
        status, result, error = JobStatus.FAILED, None, None
        try:
            with heartbeat:
                result = self.work(claim, heartbeat)
            status = JobStatus.SUCCEEDED
        except HandedOn as handed:
            return handed.status
        except Exception as exc:
            if (settled := self.settle(exc)) is not None:
                status, error = settled
            elif isinstance(exc, ChildStopped):
                stopped = heartbeat.stopped(self.noun)
                if stopped is None:
                    # Hand it back and send it again; this delivery is acknowledged when the task returns.
                    self.release()
                    self.ctx.send(self.task, self.key)
                    log.info("%s: handed back to the queue (worker shutting down)", self.describe(claim))
                    return None
                status, error = stopped
            elif (kind := user_error_type(exc)) is not None:
                log.info("%s: failed: %s: %s", self.describe(claim), kind, exc)
                error = job_error(kind, str(exc))
            else:
                log.exception("%s: unexpected error", self.describe(claim))
                error = job_error(ErrorType.INTERNAL_ERROR, INTERNAL_ERROR)

        if not self.finish(claim, status, result, error):
            # Lease lost (another worker took the job over) or already finished: not ours to write.
            log.warning(
                "%s: ended %s here but the store refused it (lease lost?)", self.describe(claim), status
            )
            return None
        log.info("%s: %s", self.describe(claim), status)
        return self.ended(claim, status)


class WholeJobRunner(JobRunner[JobRecord]):
    """A job one worker holds from claim to finish, with the job's own lease."""

    def claim(self) -> JobRecord | None:
        return self.ctx.store.claim(
            self.key, worker=self.ctx.worker, lease_seconds=self.ctx.settings.job_lease_s
        )
