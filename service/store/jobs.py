"""JobStore: jobs in one SQL database (SQLite by default, PostgreSQL in deployments), over the catalog
(`catalog.py`) and the API keys (`api_keys.py`).

The store is the source of truth for the state of every job; the broker only carries job ids.
Every state change of a job is one conditional `UPDATE ... WHERE <expected state>` whose row count
says whether it applied, so two workers (or a worker and a cancelling user) never both win.
Imports neither FastAPI nor TensorFlow: the workers use it too.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service.domain.jobs import TERMINAL_STATUSES, JobStatus
from service.domain.results import Progress
from service.errors import InvalidCursor, NotFound
from service.store import changes, lifecycle
from service.store.api_keys import ApiKeyStore
from service.store.catalog import CatalogStore
from service.store.records import (
    JobRecord,
    new_id,
    record_from_row,
)
from service.store.schema import (
    DEFAULT_MAX_ATTEMPTS,
    jobs_table,
)

log = logging.getLogger(__name__)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"j{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("j"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not one this server returned; start again without it") from exc


class JobStore(CatalogStore, ApiKeyStore):
    """Jobs, and through its bases the catalog and the API keys: the one store object the API and the
    workers hold; safe to share between threads.

    `clock` (see `Database`) tells the time every lease and timestamp is computed from.
    """

    # ---- jobs: the API side ------------------------------------------------------------------

    def create_job(
        self,
        *,
        owner: str,
        kind: str,
        spec: dict[str, Any],
        idempotency_key: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        cache_key: str | None = None,
        reuse: JobRecord | None = None,
    ) -> tuple[JobRecord, bool]:
        """A queued job; with an idempotency key already used by this owner, the first job (created=False).

        With `reuse` (a succeeded job, see `reusable_job`) the new job is created already succeeded with
        that job's result, and `reused_from` names the job that computed it.
        """
        if idempotency_key is not None:
            existing = self.job_by_idempotency_key(owner, idempotency_key)
            if existing is not None:
                return existing, False
        now = self.now()
        row: dict[str, Any] = {
            "id": new_id("job"),
            "owner": owner,
            "kind": kind,
            "status": JobStatus.QUEUED,
            "spec": spec,
            "attempts": 0,
            "max_attempts": max_attempts,
            "cancel_requested": False,
            "idempotency_key": idempotency_key,
            "cache_key": cache_key,
            "created_at": now,
            "updated_at": now,
        }
        if reuse is not None:
            if reuse.status != JobStatus.SUCCEEDED or reuse.result is None:
                raise ValueError(f"job {reuse.id} has no result to reuse")
            row.update(
                status=JobStatus.SUCCEEDED,
                result=reuse.result,
                progress={"fraction": 1.0, "stage": "done (result reused)", "eta_seconds": 0.0},
                started_at=now,
                finished_at=now,
                reused_from=reuse.reused_from or reuse.id,
            )
        try:
            with self._tx() as conn:
                conn.execute(jobs_table.insert().values(**row))
                changes.record(conn, row["id"], now=now)
        except IntegrityError:
            existing = (
                self.job_by_idempotency_key(owner, idempotency_key) if idempotency_key is not None else None
            )
            if existing is None:
                raise
            return existing, False
        if reuse is not None:
            log.info(
                "job %s succeeded at once: result of %s reused (owner %s)",
                row["id"],
                row["reused_from"],
                owner,
            )
        else:
            log.info("job %s queued (%s, owner %s)", row["id"], kind, owner)
        return self.get_job(row["id"]), True

    def reusable_job(self, owner: str, cache_key: str) -> JobRecord | None:
        """The owner's newest succeeded job with this cache key (service/domain/reuse.py), or None."""
        t = jobs_table.c
        query = (
            sa.select(jobs_table)
            .where(
                t.owner == owner,
                t.cache_key == cache_key,
                t.status == JobStatus.SUCCEEDED,
                t.result.is_not(None),
            )
            # A job that ran, never a reused copy: the API copies a copy's artifacts after creating its row,
            # so a concurrent submission could otherwise copy half of them.
            .where(t.reused_from.is_(None))
            .order_by(t.seq.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else record_from_row(JobRecord, row)

    def job_by_idempotency_key(self, owner: str, key: str) -> JobRecord | None:
        query = sa.select(jobs_table).where(jobs_table.c.owner == owner, jobs_table.c.idempotency_key == key)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else record_from_row(JobRecord, row)

    def get_job(self, job_id: str, *, owner: str | None = None) -> JobRecord:
        job = self.find_job(job_id, owner=owner)
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return job

    def stop_wanted(self, job_id: str) -> bool:
        """Whether a running job (or its shards) should stop: a cancel was asked, or it has ended or gone.

        A read, cheap enough for a heartbeat to poll every second while the model is silent."""
        t = jobs_table.c
        query = sa.select(t.cancel_requested, t.status).where(t.id == job_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return row is None or bool(row.cancel_requested) or row.status in TERMINAL_STATUSES

    def find_job(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        """The job, or None when it does not exist (or belongs to another owner)."""
        row = self._get(jobs_table, job_id, owner)
        return None if row is None else record_from_row(JobRecord, row)

    def list_jobs(
        self,
        owner: str,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """The owner's jobs, newest first, and the cursor of the next page (None on the last page)."""
        query = sa.select(jobs_table).where(jobs_table.c.owner == owner)
        if kind is not None:
            query = query.where(jobs_table.c.kind == kind)
        if status is not None:
            query = query.where(jobs_table.c.status == status)
        if cursor is not None:
            query = query.where(jobs_table.c.seq < _decode_cursor(cursor))
        query = query.order_by(jobs_table.c.seq.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings().all())
        next_cursor = _encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return [record_from_row(JobRecord, row) for row in rows[:limit]], next_cursor

    def request_cancel(self, job_id: str, *, owner: str) -> JobRecord:
        """Cancel a job: a queued one (or one whose worker died) at once, a running one at its next report."""
        job = self.get_job(job_id, owner=owner)
        now = self.now()
        with self._tx() as conn:
            if not lifecycle.cancel_unheld(conn, job_id, now=now):
                lifecycle.ask_to_cancel(conn, job_id, now=now)
        after = self.get_job(job_id)
        if after.status != job.status or after.cancel_requested != job.cancel_requested:
            log.info("job %s cancel requested: %s -> %s", job_id, job.status, after.status)
        return after

    # ---- jobs: the worker side ---------------------------------------------------------------

    def claim(self, job_id: str, *, worker: str, lease_seconds: float) -> JobRecord | None:
        """Take the job for `worker`: a queued one, or a running one whose lease expired (its worker died).

        None when the job must not run here: it is finished or cancelled, another live worker holds it,
        or its attempts are used up (then it is marked failed with a sentence).
        """
        now = self.now()
        with self._tx() as conn:
            started = lifecycle.start(conn, job_id, worker=worker, lease_seconds=lease_seconds, now=now)
        if started:
            job = self.get_job(job_id)
            log.info(
                "job %s running on %s (attempt %d of %d)", job_id, worker, job.attempts, job.max_attempts
            )
            return job
        self._settle_unclaimable(job_id, now)
        return None

    def _settle_unclaimable(self, job_id: str, now: datetime) -> None:
        """A job nobody may run any more (cancelled while its worker died, or out of attempts) ends here."""
        with self._tx() as conn:
            cancelled = lifecycle.cancel_unheld(conn, job_id, now=now, requested=True)
            exhausted = not cancelled and lifecycle.exhaust(conn, job_id, now=now)
        if cancelled:
            log.info("job %s cancelled (its worker had stopped)", job_id)
        if exhausted:
            log.info("job %s failed: attempts exhausted", job_id)

    def report_progress(self, job_id: str, *, worker: str, progress: Progress, lease_seconds: float) -> bool:
        """Record progress and extend the lease; False means stop: cancel requested or the job is not ours."""
        with self._tx() as conn:
            return lifecycle.renew(
                conn,
                job_id,
                worker=worker,
                progress=progress.model_dump(mode="json"),
                lease_seconds=lease_seconds,
                now=self.now(),
            )

    def finish(
        self,
        job_id: str,
        *,
        worker: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """End a running job held by `worker` as succeeded, failed or cancelled; False if it was not ours."""
        with self._tx() as conn:
            done = lifecycle.finish(
                conn, job_id, worker=worker, status=status, result=result, error=error, now=self.now()
            )
        if done:
            suffix = f": {error.get('detail')}" if error else ""
            log.info("job %s %s on %s%s", job_id, status, worker, suffix)
        else:
            log.info(
                "job %s: %s from %s ignored (not the lease holder or already finished)",
                job_id,
                status,
                worker,
            )
        return done

    def release(self, job_id: str, *, worker: str) -> None:
        """Give a running job back (the worker is shutting down): queued again, attempts kept."""
        with self._tx() as conn:
            released = lifecycle.release(conn, job_id, worker=worker, now=self.now())
        if released:
            log.info("job %s released by %s", job_id, worker)

    def stale_queued_jobs(self, *, older_than_seconds: float) -> list[JobRecord]:
        """Queued jobs untouched for a while: their broker message may be lost, re-enqueue them."""
        cutoff = self.now() - timedelta(seconds=older_than_seconds)
        t = jobs_table.c
        query = (
            sa.select(jobs_table).where(t.status == JobStatus.QUEUED, t.updated_at < cutoff).order_by(t.seq)
        )
        with self.engine.connect() as conn:
            return [record_from_row(JobRecord, row) for row in conn.execute(query).mappings()]

    def expired_leases(self) -> list[JobRecord]:
        """Running jobs whose worker stopped renewing its lease: re-enqueue them, claim() takes them over."""
        query = sa.select(jobs_table).where(lifecycle.lease_expired(self.now())).order_by(jobs_table.c.seq)
        with self.engine.connect() as conn:
            return [record_from_row(JobRecord, row) for row in conn.execute(query).mappings()]

    def count_jobs_by_status(self) -> dict[str, int]:
        """Every owner's jobs counted by status (for /metrics)."""
        query = sa.select(jobs_table.c.status, sa.func.count()).group_by(jobs_table.c.status)
        with self.engine.connect() as conn:
            counts = {status: int(n) for status, n in conn.execute(query)}
        return {status.value: counts.get(status, 0) for status in JobStatus}
