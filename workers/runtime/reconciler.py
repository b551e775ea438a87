"""Re-enqueue jobs the broker may have lost, from a thread in every worker.

Why: with the Redis broker, a message delivered to a worker that is then SIGKILLed stays in kombu's
`unacked` hash until the visibility timeout passes (longer than the longest job, so hours), and a
Redis restart without persistence loses queued messages, and the API only logs a failed send when the
broker is down. The store knows better: a `running` job whose lease expired lost its worker, and a job
`queued` (or a model `validating`) for a long time may have lost its message.
Sending the job id again is always safe, because `JobStore.claim` lets one delivery run a job and
turns every other delivery into a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.domain.jobs import JobStatus
from service.domain.tasks import (
    RUN_EVALUATION,
    RUN_EVALUATION_SHARD,
    RUN_HARD_SET,
    RUN_TRAINING,
    VALIDATE_MODEL,
)
from service.store.jobs import JobStore
from service.store.shards import ShardStore

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

TASK_FOR_KIND = {"evaluation": RUN_EVALUATION, "training": RUN_TRAINING, "hard_set": RUN_HARD_SET}


class Reconciler:
    """Finds lost jobs (and model validations) and sends them again, at most once per `resend_after_s` each.

    Args:
        store: the job store.
        send: sends a task by name with the job id as its argument.
        requeue_queued_after_s: a job queued (untouched) for this long is sent again.
        resend_after_s: this worker does not send the same job again sooner than this.
    """

    def __init__(
        self,
        store: JobStore,
        send: Callable[[str, str], None],
        *,
        requeue_queued_after_s: float,
        resend_after_s: float,
    ) -> None:
        self.store = store
        self.send = send
        self.requeue_queued_after_s = requeue_queued_after_s
        self.resend_after_s = resend_after_s
        self._sent_at: dict[str, float] = {}

    def run_once(self) -> list[str]:
        """One pass; returns the ids of the models and jobs sent again."""
        now = time.monotonic()
        self._sent_at = {k: t for k, t in self._sent_at.items() if now - t < self.resend_after_s}
        lost = self.store.expired_leases() + self.store.stale_queued_jobs(
            older_than_seconds=self.requeue_queued_after_s
        )
        sent = []
        for model in self.store.stale_validating_models(older_than_seconds=self.requeue_queued_after_s):
            if model.id in self._sent_at:
                continue
            log.info("reconciler: sending validation of model %s (sha256 %s) again", model.id, model.sha256)
            self.send(VALIDATE_MODEL, model.id)
            self._sent_at[model.id] = now
            sent.append(model.id)
        for job in lost:
            task = TASK_FOR_KIND.get(job.kind)
            if task is None or job.id in self._sent_at:
                continue
            why = (
                "its worker stopped renewing the lease"
                if job.status == JobStatus.RUNNING
                else "queued for long"
            )
            log.info("reconciler: sending job %s again (%s)", job.id, why)
            self.send(task, job.id)
            self._sent_at[job.id] = now
            sent.append(job.id)
        # Shards (workers/runners/sharded.py) of a dead worker, with a lost message, or of a cancelled job.
        for shard in ShardStore(self.store).lost_shards(
            queued_older_than_seconds=self.requeue_queued_after_s
        ):
            if shard.key in self._sent_at:
                continue
            log.info("reconciler: sending shard %s again (%s)", shard.key, shard.status)
            self.send(RUN_EVALUATION_SHARD, shard.key)
            self._sent_at[shard.key] = now
            sent.append(shard.key)
        return sent


def start_reconciler(ctx: WorkerContext, *, interval_s: float | None = None) -> threading.Thread:
    """Run `Reconciler.run_once` now and every `interval_s` seconds in a daemon thread."""
    settings = ctx.settings
    reconciler = Reconciler(
        ctx.store,
        ctx.send,
        requeue_queued_after_s=settings.requeue_queued_after_s,
        resend_after_s=max(settings.job_lease_s, settings.reconcile_interval_s),
    )
    every = interval_s if interval_s is not None else settings.reconcile_interval_s

    def loop() -> None:
        while True:
            try:
                reconciler.run_once()
            except Exception:  # the database or the broker may be briefly away; try again next round
                log.warning("reconciler: pass failed; retrying in %.0f s", every, exc_info=True)
            time.sleep(every)

    thread = threading.Thread(target=loop, name="parry-reconciler", daemon=True)
    thread.start()
    log.info("reconciler: every %.0f s", every)
    return thread
