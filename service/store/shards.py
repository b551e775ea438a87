"""ShardStore: the shards of a sharded evaluation, beside the JobStore and in the same database.

A sharded parent job stays `running` for the user while it is in one of three hands: the coordinating
worker (clean pass, with a lease), its shards (`phase` = sharded: no lease, the shards carry theirs), and
the worker that finished the last shard (the merge, with a lease). The parent's row changes only through
`lifecycle.py`; a shard's row, like a job's, changes by conditional UPDATEs whose row count says whether
they applied. Imports neither FastAPI nor TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from service.domain.jobs import JobPhase, JobStatus
from service.store import lifecycle
from service.store.jobs import JobStore
from service.store.schema import DEFAULT_MAX_ATTEMPTS, evaluation_plans_table, job_shards_table, jobs_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSpan:
    """What the coordinator plans for one shard: global batches [batch_start, batch_stop) and their work."""

    batch_start: int
    batch_stop: int
    units: float


@dataclass(frozen=True)
class PlanRecord:
    job_id: str
    num_shards: int
    shards_done: int
    clean_units: float
    total_units: float
    created_at: datetime


@dataclass(frozen=True)
class ShardRecord:
    job_id: str
    shard_index: int
    status: str
    batch_start: int
    batch_stop: int
    units: float
    fraction: float
    attempts: int
    max_attempts: int
    worker: str | None
    lease_until: datetime | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def key(self) -> str:
        return shard_key(self.job_id, self.shard_index)


def shard_key(job_id: str, index: int) -> str:
    """The one-string id a shard task carries (job ids never hold a colon)."""
    return f"{job_id}:{index}"


def parse_shard_key(key: str) -> tuple[str, int]:
    job_id, _, index = key.rpartition(":")
    return job_id, int(index)


def _shard_lease_expired(now: datetime) -> sa.ColumnElement[bool]:
    s = job_shards_table.c
    return sa.and_(s.status == JobStatus.RUNNING, s.lease_until < now)


def _shard_claimable(now: datetime) -> sa.ColumnElement[bool]:
    """A shard a worker may take: queued, or running with a lease that expired (its worker died)."""
    return sa.or_(job_shards_table.c.status == JobStatus.QUEUED, _shard_lease_expired(now))


def _shard_held(job_id: str, index: int, worker: str) -> sa.ColumnElement[bool]:
    s = job_shards_table.c
    return sa.and_(
        s.job_id == job_id, s.shard_index == index, s.status == JobStatus.RUNNING, s.worker == worker
    )


def _shard(row: Any) -> ShardRecord:
    fields = ShardRecord.__dataclass_fields__
    return ShardRecord(**{k: v for k, v in row.items() if k in fields})


class ShardStore:
    """Plans and shards of sharded evaluations, over the JobStore's engine."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.engine = store.engine

    # ---- the coordinator ----------------------------------------------------------------------

    def create_plan(
        self,
        job_id: str,
        *,
        coordinator: str,
        spans: list[ShardSpan],
        clean_units: float,
        total_units: float,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> bool:
        """Record the shards and hand the parent job from `coordinator` to them; False if it was not ours."""
        now = self.store.now()
        with self.engine.begin() as conn:
            if not lifecycle.hand_to_shards(conn, job_id, worker=coordinator, now=now):
                return False
            conn.execute(
                evaluation_plans_table.insert().values(
                    job_id=job_id,
                    num_shards=len(spans),
                    shards_done=0,
                    clean_units=clean_units,
                    total_units=total_units,
                    created_at=now,
                )
            )
            conn.execute(
                job_shards_table.insert(),
                [
                    {
                        "job_id": job_id,
                        "shard_index": i,
                        "status": JobStatus.QUEUED,
                        "batch_start": span.batch_start,
                        "batch_stop": span.batch_stop,
                        "units": span.units,
                        "fraction": 0.0,
                        "attempts": 0,
                        "max_attempts": max_attempts,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i, span in enumerate(spans)
                ],
            )
        log.info("job %s: split into %d shards", job_id, len(spans))
        return True

    def hand_to_shards(self, job_id: str, *, worker: str) -> bool:
        """Give a parent job that `worker` claimed (after a lost merge) back to its shards."""
        with self.engine.begin() as conn:
            return lifecycle.hand_to_shards(conn, job_id, worker=worker, now=self.store.now())

    def get_plan(self, job_id: str) -> PlanRecord | None:
        query = sa.select(evaluation_plans_table).where(evaluation_plans_table.c.job_id == job_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else PlanRecord(**row)

    def shards(self, job_id: str) -> list[ShardRecord]:
        s = job_shards_table.c
        query = sa.select(job_shards_table).where(s.job_id == job_id).order_by(s.shard_index)
        with self.engine.connect() as conn:
            return [_shard(row) for row in conn.execute(query).mappings()]

    def get_shard(self, job_id: str, index: int) -> ShardRecord | None:
        s = job_shards_table.c
        query = sa.select(job_shards_table).where(s.job_id == job_id, s.shard_index == index)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _shard(row)

    # ---- a shard's worker ----------------------------------------------------------------------

    def _parent_live(self, job_id: str) -> sa.ColumnElement[bool]:
        j = jobs_table.c
        return sa.exists().where(j.id == job_id, lifecycle.sharded(), j.cancel_requested.is_(False))

    def claim_shard(
        self, job_id: str, index: int, *, worker: str, lease_seconds: float
    ) -> ShardRecord | None:
        """Take a queued shard, or one whose worker died; None when it must not run here."""
        now = self.store.now()
        s = job_shards_table.c
        claimable = _shard_claimable(now)
        with self.engine.begin() as conn:
            rows = conn.execute(
                job_shards_table.update()
                .where(s.job_id == job_id, s.shard_index == index, claimable, s.attempts < s.max_attempts)
                .where(self._parent_live(job_id))
                .values(
                    status=JobStatus.RUNNING,
                    worker=worker,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=s.attempts + 1,
                    updated_at=now,
                )
            ).rowcount
        if rows != 1:
            return None
        shard = self.get_shard(job_id, index)
        if shard is not None:
            log.info(
                "job %s shard %d running on %s (attempt %d of %d)",
                job_id, index, worker, shard.attempts, shard.max_attempts,
            )  # fmt: skip
        return shard

    def report_shard_progress(
        self, job_id: str, index: int, *, worker: str, fraction: float, lease_seconds: float, stage: str
    ) -> bool:
        """Record a shard's progress, renew its lease and update the parent's aggregate progress.

        False means stop: the parent was cancelled or ended, or the shard is no longer this worker's.
        """
        now = self.store.now()
        s, p = job_shards_table.c, evaluation_plans_table.c
        with self.engine.begin() as conn:
            rows = conn.execute(
                job_shards_table.update()
                .where(_shard_held(job_id, index, worker))
                .where(self._parent_live(job_id))
                .values(
                    fraction=min(max(fraction, 0.0), 1.0),
                    lease_until=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            ).rowcount
            if rows != 1:
                return False
            plan = conn.execute(sa.select(evaluation_plans_table).where(p.job_id == job_id)).mappings().one()
            stats = conn.execute(
                sa.select(
                    sa.func.sum(s.units * s.fraction),
                    sa.func.count().filter(s.status == JobStatus.SUCCEEDED),
                    sa.func.count().filter(s.status == JobStatus.RUNNING),
                ).where(s.job_id == job_id)
            ).one()
            done_units = plan["clean_units"] + float(stats[0] or 0.0)
            overall = done_units / plan["total_units"] if plan["total_units"] > 0 else 1.0
            elapsed = (now - plan["created_at"]).total_seconds()
            shard_work = done_units - plan["clean_units"]
            remaining = plan["total_units"] - done_units
            eta = elapsed * remaining / shard_work if shard_work > 0 else None
            progress = {
                "fraction": min(max(overall, 0.0), 1.0),
                "stage": f"{stage} ({stats[1]} of {plan['num_shards']} shards done, {stats[2]} running)",
                "eta_seconds": eta,
            }
            lifecycle.shard_progress(conn, job_id, progress=progress, now=now)
        return True

    def finish_shard(
        self,
        job_id: str,
        index: int,
        *,
        worker: str,
        status: JobStatus,
        lease_seconds: float,
        error: dict[str, Any] | None = None,
    ) -> tuple[bool, bool]:
        """End a shard this worker holds; returns (applied, merge).

        `merge` is True for exactly one worker: the one whose success was the last of the plan. In the same
        transaction that worker takes the parent job with a lease of its own, so a merge that dies is taken
        over like a job (the lease expires, the reconciler sends the job again).
        """
        now = self.store.now()
        p = evaluation_plans_table.c
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "lease_until": None,
            "finished_at": now,
            "updated_at": now,
        }
        if status == JobStatus.SUCCEEDED:
            values["fraction"] = 1.0
        with self.engine.begin() as conn:
            applied = conn.execute(
                job_shards_table.update().where(_shard_held(job_id, index, worker)).values(**values)
            ).rowcount
            if applied != 1 or status != JobStatus.SUCCEEDED:
                return applied == 1, False
            # The row lock of this UPDATE orders concurrent finishers: each sees the count after its own.
            conn.execute(
                evaluation_plans_table.update()
                .where(p.job_id == job_id)
                .values(shards_done=p.shards_done + 1)
            )
            plan = conn.execute(sa.select(p.shards_done, p.num_shards).where(p.job_id == job_id)).one()
            if plan.shards_done < plan.num_shards:
                return True, False
            took = lifecycle.take_merge(conn, job_id, worker=worker, lease_seconds=lease_seconds, now=now)
        return True, took

    def release_shard(self, job_id: str, index: int, *, worker: str) -> None:
        """Give a running shard back (its worker is shutting down): queued again, attempts kept."""
        with self.engine.begin() as conn:
            conn.execute(
                job_shards_table.update()
                .where(_shard_held(job_id, index, worker))
                .values(status=JobStatus.QUEUED, worker=None, lease_until=None, updated_at=self.store.now())
            )

    def end_parent(self, job_id: str, *, status: JobStatus, error: dict[str, Any] | None = None) -> bool:
        """End a parent job held by its shards (a shard failed, or the user cancelled); False if not."""
        with self.engine.begin() as conn:
            ended = lifecycle.end_sharded(
                conn, job_id, status=JobStatus(status), error=error, now=self.store.now()
            )
        if ended:
            suffix = f": {error.get('detail')}" if error else ""
            log.info("job %s %s (sharded)%s", job_id, status, suffix)
        return ended

    def settle_shard(self, job_id: str, index: int) -> None:
        """A shard that may not run: end its parent if it was cancelled or the shard is out of attempts."""
        j, s = jobs_table.c, job_shards_table.c
        with self.engine.connect() as conn:
            parent = conn.execute(
                sa.select(j.status, j.phase, j.cancel_requested).where(j.id == job_id)
            ).first()
            shard = (
                conn.execute(sa.select(job_shards_table).where(s.job_id == job_id, s.shard_index == index))
                .mappings()
                .first()
            )
        if (
            parent is None
            or shard is None
            or parent.status != JobStatus.RUNNING
            or parent.phase != JobPhase.SHARDED
        ):
            return
        if parent.cancel_requested:
            self.end_parent(job_id, status=JobStatus.CANCELLED)
            return
        now = self.store.now()
        claimable = shard["status"] == JobStatus.QUEUED or (
            shard["status"] == JobStatus.RUNNING
            and shard["lease_until"] is not None
            and shard["lease_until"] < now
        )
        if claimable and shard["attempts"] >= shard["max_attempts"]:
            error = {
                "type": "attempts_exhausted",
                "detail": f"shard {index} of the evaluation was started {shard['attempts']} times and its "
                "worker stopped each time (out of memory or killed); check the model and batch_size, "
                "then submit it again",
            }
            with self.engine.begin() as conn:
                conn.execute(
                    job_shards_table.update()
                    .where(s.job_id == job_id, s.shard_index == index)
                    .values(
                        status=JobStatus.FAILED,
                        error=error,
                        lease_until=None,
                        finished_at=now,
                        updated_at=now,
                    )
                )
            self.end_parent(job_id, status=JobStatus.FAILED, error=error)

    # ---- the reconciler ------------------------------------------------------------------------

    def lost_shards(self, *, queued_older_than_seconds: float) -> list[ShardRecord]:
        """Shards of live sharded jobs whose worker died (lease expired) or whose message may be lost."""
        now = self.store.now()
        cutoff = now - timedelta(seconds=queued_older_than_seconds)
        s, j = job_shards_table.c, jobs_table.c
        query = (
            sa.select(job_shards_table)
            .join(jobs_table, j.id == s.job_id)
            .where(lifecycle.sharded())
            .where(
                sa.or_(
                    _shard_lease_expired(now),
                    sa.and_(s.status == JobStatus.QUEUED, s.updated_at < cutoff),
                    # A cancelled parent: one delivery of any shard ends it (see settle_shard).
                    sa.and_(
                        s.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)), j.cancel_requested.is_(True)
                    ),
                )
            )
            .order_by(s.seq)
        )
        with self.engine.connect() as conn:
            return [_shard(row) for row in conn.execute(query).mappings()]
