"""Every change to a job's row, in one module: one conditional UPDATE each, whose row count decides
whether it applied.

Two workers, or a worker and a cancelling user, may race for the same row; the WHERE clause of each
change states the only situation it may apply in, so exactly one of them wins and the other learns it
from a row count of 0. Each change names the statuses it may start from and the one it leads to, and is
checked against `TRANSITIONS` (service/domain/jobs.py) when this module is imported. `JobStore` and
`ShardStore` call these functions; nothing else writes to the jobs table (a test holds that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.domain.jobs import (
    TERMINAL_STATUSES,
    ErrorType,
    JobPhase,
    JobStatus,
    can_transition,
    job_error,
)
from service.store import changes
from service.store.schema import UTCDateTime, jobs_table

t = jobs_table.c
P = ParamSpec("P")
R = TypeVar("R")

QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING

# (name, sources, targets) of every change below, for the docs and the tests.
CHANGES: list[tuple[str, frozenset[JobStatus], frozenset[JobStatus]]] = []


def _change(
    sources: Iterable[JobStatus], targets: Iterable[JobStatus]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare which statuses a change starts from and leads to; refuse one the table does not allow."""
    src, dst = frozenset(sources), frozenset(targets)

    def declare(fn: Callable[P, R]) -> Callable[P, R]:
        bad = [(s, d) for s in src for d in dst if not can_transition(s, d)]
        if bad:
            raise AssertionError(f"{fn.__name__}: transitions not in TRANSITIONS: {bad}")
        CHANGES.append((fn.__name__, src, dst))
        return fn

    return declare


# ---- conditions, each written once ------------------------------------------------------------------


def claimable(now: datetime) -> sa.ColumnElement[bool]:
    """A job a worker may take: queued, or running whole with a lease that expired (its worker died)."""
    return sa.or_(t.status == QUEUED, lease_expired(now))


def lease_expired(now: datetime) -> sa.ColumnElement[bool]:
    """Running with a lease nobody renewed in time. A sharded job has no lease, so it never expires."""
    return sa.and_(t.status == RUNNING, t.phase.is_(None), t.lease_until < now)


def held_by(worker: str) -> sa.ColumnElement[bool]:
    """Running, held whole by `worker` (its claim, or its merge of a sharded job)."""
    return sa.and_(t.status == RUNNING, t.worker == worker, t.phase.is_(None))


def sharded() -> sa.ColumnElement[bool]:
    """Running, held by its shards."""
    return sa.and_(t.status == RUNNING, t.phase == JobPhase.SHARDED)


def _apply(conn: Connection, job_id: str, when: sa.ColumnElement[bool], values: dict[str, Any]) -> bool:
    applied: bool = (
        conn.execute(jobs_table.update().where(t.id == job_id, when).values(**values)).rowcount == 1
    )
    if applied:  # in the same transaction: the change and its feed row commit together (changes.py)
        changes.record(conn, job_id, now=values["updated_at"])
    return applied


# ---- a whole job ------------------------------------------------------------------------------------


@_change([QUEUED, RUNNING], [RUNNING])
def start(conn: Connection, job_id: str, *, worker: str, lease_seconds: float, now: datetime) -> bool:
    """A worker claims the job: queued, or taken over from a dead worker; one more attempt counted."""
    when = sa.and_(claimable(now), t.cancel_requested.is_(False), t.attempts < t.max_attempts)
    return _apply(
        conn,
        job_id,
        when,
        {
            "status": RUNNING,
            "worker": worker,
            "phase": None,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "attempts": t.attempts + 1,
            "started_at": sa.func.coalesce(t.started_at, sa.literal(now, UTCDateTime)),
            "updated_at": now,
        },
    )


@_change([QUEUED, RUNNING], [JobStatus.CANCELLED])
def cancel_unheld(conn: Connection, job_id: str, *, now: datetime, requested: bool = False) -> bool:
    """Cancel a job nobody is running (queued, or its worker died). With `requested`, only if the user
    had already asked (a delivery settling a job whose cancel came while its worker was dead)."""
    when = sa.and_(claimable(now), t.cancel_requested.is_(True)) if requested else claimable(now)
    return _apply(
        conn,
        job_id,
        when,
        {
            "status": JobStatus.CANCELLED,
            "cancel_requested": True,
            "finished_at": now,
            "updated_at": now,
            "worker": None,
            "lease_until": None,
            "progress": None,
        },
    )


@_change([RUNNING], [RUNNING])
def ask_to_cancel(conn: Connection, job_id: str, *, now: datetime) -> bool:
    """Flag a running job; its worker (or its shards) stop at the next report and end it cancelled."""
    return _apply(conn, job_id, t.status == RUNNING, {"cancel_requested": True, "updated_at": now})


@_change([QUEUED, RUNNING], [JobStatus.FAILED])
def exhaust(conn: Connection, job_id: str, *, now: datetime) -> bool:
    """Fail a job nobody may start again: every attempt's worker died."""
    row = conn.execute(sa.select(t.attempts).where(t.id == job_id)).first()
    attempts = row.attempts if row is not None else 0
    error = job_error(
        ErrorType.ATTEMPTS_EXHAUSTED,
        f"the job was started {attempts} times and its worker stopped each time "
        "(out of memory or killed); check the model and batch_size, then submit it again",
    )
    when = sa.and_(claimable(now), t.attempts >= t.max_attempts)
    values = {"status": JobStatus.FAILED, "error": error, "finished_at": now, "updated_at": now}
    return _apply(conn, job_id, when, {**values, "worker": None, "lease_until": None})


@_change([RUNNING], [RUNNING])
def renew(
    conn: Connection,
    job_id: str,
    *,
    worker: str,
    progress: dict[str, Any],
    lease_seconds: float,
    now: datetime,
) -> bool:
    """The holder's heartbeat: progress and a longer lease. False tells it to stop (cancel, or not its)."""
    when = sa.and_(held_by(worker), t.cancel_requested.is_(False))
    lease = now + timedelta(seconds=lease_seconds)
    return _apply(conn, job_id, when, {"progress": progress, "lease_until": lease, "updated_at": now})


@_change([RUNNING], TERMINAL_STATUSES)
def finish(
    conn: Connection,
    job_id: str,
    *,
    worker: str,
    status: JobStatus,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
    now: datetime,
) -> bool:
    """The holder ends the job."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"finish() needs a terminal status, got {status!r}")
    values: dict[str, Any] = {
        "status": status,
        "result": result,
        "error": error,
        "finished_at": now,
        "updated_at": now,
        "lease_until": None,
    }
    if status == JobStatus.SUCCEEDED:
        values["progress"] = {"fraction": 1.0, "stage": "done", "eta_seconds": 0.0}
    return _apply(conn, job_id, held_by(worker), values)


@_change([RUNNING], [QUEUED, JobStatus.CANCELLED])
def release(conn: Connection, job_id: str, *, worker: str, now: datetime) -> bool:
    """The holder gives the job back (it is shutting down): queued again with its attempts kept, or
    cancelled when the user asked meanwhile."""
    unheld = {"worker": None, "lease_until": None, "updated_at": now}
    cancelled = sa.and_(held_by(worker), t.cancel_requested.is_(True))
    if _apply(conn, job_id, cancelled, {**unheld, "status": JobStatus.CANCELLED, "finished_at": now}):
        return True
    return _apply(conn, job_id, held_by(worker), {**unheld, "status": QUEUED})


# ---- a sharded job ----------------------------------------------------------------------------------


@_change([RUNNING], [RUNNING])
def hand_to_shards(conn: Connection, job_id: str, *, worker: str, now: datetime) -> bool:
    """The coordinator (or a worker that found the merge lost) hands the job to its shards."""
    when = sa.and_(held_by(worker), t.cancel_requested.is_(False))
    values = {"phase": JobPhase.SHARDED, "worker": None, "lease_until": None, "updated_at": now}
    return _apply(conn, job_id, when, values)


@_change([RUNNING], [RUNNING])
def shard_progress(conn: Connection, job_id: str, *, progress: dict[str, Any], now: datetime) -> bool:
    """The aggregate progress of a job its shards hold."""
    return _apply(conn, job_id, sharded(), {"progress": progress, "updated_at": now})


@_change([RUNNING], [RUNNING])
def take_merge(conn: Connection, job_id: str, *, worker: str, lease_seconds: float, now: datetime) -> bool:
    """The worker whose shard was the last to succeed takes the job, with a lease, to merge it."""
    lease = now + timedelta(seconds=lease_seconds)
    return _apply(
        conn, job_id, sharded(), {"phase": None, "worker": worker, "lease_until": lease, "updated_at": now}
    )


@_change([RUNNING], [JobStatus.FAILED, JobStatus.CANCELLED])
def end_sharded(
    conn: Connection, job_id: str, *, status: JobStatus, error: dict[str, Any] | None, now: datetime
) -> bool:
    """End a job its shards hold: a shard failed, or the user cancelled."""
    if status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ValueError(f"a sharded job ends failed or cancelled here, not {status!r}")
    # Nobody holds an ended job, its shards included.
    values = {"status": status, "error": error, "finished_at": now, "updated_at": now, "phase": None}
    return _apply(conn, job_id, sharded(), values)
