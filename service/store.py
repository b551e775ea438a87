"""JobStore: models, datasets and jobs in one SQL database (SQLite by default, PostgreSQL in deployments).

The store is the source of truth for the state of every job; the broker only carries job ids.
Every state change of a job is one conditional `UPDATE ... WHERE <expected state>` whose row count
says whether it applied, so two workers (or a worker and a cancelling user) never both win.
Imports neither FastAPI nor TensorFlow: the workers use it too.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service.db import (
    DEFAULT_MAX_ATTEMPTS,
    UTCDateTime,
    add_missing_columns,
    api_keys_table,
    datasets_table,
    jobs_table,
    make_engine,
    metadata,
    models_table,
)
from service.errors import InvalidCursor, NotFound
from service.schemas import Progress

log = logging.getLogger(__name__)

ModelStatus = Literal["validating", "ready", "rejected"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["evaluation", "training"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12)}"


@dataclass(frozen=True)
class ModelRecord:
    id: str
    owner: str
    name: str
    sha256: str
    format: str
    size_bytes: int
    status: str
    input_shape: list[int] | None
    num_classes: int | None
    output: str
    rejection: str | None
    created_at: datetime
    updated_at: datetime
    trainable: bool | None = None
    validation_attempts: int = 0


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    owner: str
    name: str
    sha256: str
    size_bytes: int
    num_samples: int
    sample_shape: list[int]
    num_classes: int
    created_at: datetime


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    kind: str
    status: str
    spec: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    attempts: int
    max_attempts: int
    worker: str | None
    lease_until: datetime | None
    cancel_requested: bool
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cache_key: str | None = None
    reused_from: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as stored: its id (the owner of what the key creates) and a hash, never the key."""

    id: str
    name: str
    key_sha256: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


R = TypeVar("R", ModelRecord, DatasetRecord, JobRecord, ApiKeyRecord)


def _record(cls: type[R], row: Any) -> R:
    fields = cls.__dataclass_fields__
    return cls(**{k: v for k, v in row.items() if k in fields})


# The per-request reads (a row by id, the key checks) are built once: building and cache-keying a
# SELECT costs more than SQLite takes to answer it, and every authenticated request makes two of them.
@functools.cache
def _select_by_id(table: sa.Table, *, with_owner: bool) -> sa.Select[Any]:
    query = sa.select(table).where(table.c.id == sa.bindparam("row_id"))
    return query.where(table.c.owner == sa.bindparam("owner")) if with_owner else query


_ANY_API_KEY = sa.select(api_keys_table.c.seq).limit(1)
_API_KEY_BY_HASH = sa.select(api_keys_table).where(api_keys_table.c.key_sha256 == sa.bindparam("key_sha256"))


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


class JobStore:
    """Models, datasets and jobs over SQLAlchemy; safe to share between threads."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.engine: Engine = make_engine(database_url)
        self._shared = threading.local()  # the connection of an open `reading()` block, per thread

    # ---- schema and health -------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create missing tables, then add columns that newer code expects (idempotent)."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # An API and a worker starting together must not both run CREATE TABLE.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7270279)"))
            metadata.create_all(conn, checkfirst=True)
            add_missing_columns(conn)
            for table in metadata.sorted_tables:  # indexes of columns added to an existing table
                for index in table.indexes:
                    index.create(conn, checkfirst=True)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Reads made inside (in this thread) share one connection: one pool checkout, one liveness ping.

        For a request that makes several point reads (the caller's key, then the row): on PostgreSQL each
        checkout costs a round trip of its own. Writes keep their own transactions.
        """
        if getattr(self._shared, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            self._shared.conn = conn
            try:
                yield
            finally:
                self._shared.conn = None

    def _connect(self) -> AbstractContextManager[Connection]:
        shared: Connection | None = getattr(self._shared, "conn", None)
        return nullcontext(shared) if shared is not None else self.engine.connect()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- models ------------------------------------------------------------------------------

    def add_model(
        self, *, owner: str, name: str, sha256: str, format: str, size_bytes: int, output: str
    ) -> tuple[ModelRecord, bool]:
        """A new model in status `validating`; the same owner and bytes give the existing record."""
        existing = self._model_by_sha(owner, sha256)
        if existing is not None:
            return existing, False
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_id("mdl"),
            "owner": owner,
            "name": name,
            "sha256": sha256,
            "format": format,
            "size_bytes": size_bytes,
            "status": "validating",
            "input_shape": None,
            "num_classes": None,
            "output": output,
            "rejection": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._tx() as conn:
                conn.execute(models_table.insert().values(**row))
        except IntegrityError:
            # Two identical uploads raced; the unique (owner, sha256) constraint picked the first.
            existing = self._model_by_sha(owner, sha256)
            if existing is None:
                raise
            return existing, False
        log.info("model %s added (sha256 %s, format %s, owner %s)", row["id"], sha256, format, owner)
        return self.get_model(row["id"]), True

    def _model_by_sha(self, owner: str, sha256: str) -> ModelRecord | None:
        query = sa.select(models_table).where(models_table.c.owner == owner, models_table.c.sha256 == sha256)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(ModelRecord, row)

    def stale_validating_models(self, *, older_than_seconds: float) -> list[ModelRecord]:
        """Models still `validating` after a while: their validation message may be lost, send it again."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        t = models_table.c
        query = sa.select(models_table).where(t.status == "validating", t.updated_at < cutoff).order_by(t.seq)
        with self.engine.connect() as conn:
            return [_record(ModelRecord, row) for row in conn.execute(query).mappings()]

    def get_model(self, model_id: str, *, owner: str | None = None) -> ModelRecord:
        """The model; `NotFound` when it does not exist or belongs to another owner."""
        row = self._get(models_table, model_id, owner)
        if row is None:
            raise NotFound(f"model {model_id!r} does not exist")
        return _record(ModelRecord, row)

    def list_models(self, owner: str) -> list[ModelRecord]:
        return [_record(ModelRecord, row) for row in self._list(models_table, owner)]

    def delete_model(self, model_id: str, *, owner: str) -> None:
        self._delete(models_table, model_id, owner, "model")

    def set_model_ready(
        self,
        model_id: str,
        *,
        input_shape: list[int],
        num_classes: int,
        output: str,
        trainable: bool | None = None,
    ) -> None:
        self._update_model(
            model_id,
            status="ready",
            input_shape=[int(d) for d in input_shape],
            num_classes=int(num_classes),
            output=output,
            rejection=None,
            trainable=trainable,
        )
        log.info("model %s ready: input %s, %d classes, %s", model_id, input_shape, num_classes, output)

    def start_model_validation(self, model_id: str) -> int | None:
        """Count a worker starting to validate the model; the count so far, None when it is not validating."""
        t = models_table.c
        update = (
            models_table.update()
            .where(t.id == model_id, t.status == "validating")
            .values(validation_attempts=t.validation_attempts + 1, updated_at=utcnow())
        )
        with self._tx() as conn:
            if conn.execute(update).rowcount != 1:
                return None
            count = conn.execute(sa.select(t.validation_attempts).where(t.id == model_id)).scalar_one()
        return int(count)

    def set_model_rejected(self, model_id: str, *, reason: str) -> None:
        self._update_model(model_id, status="rejected", rejection=reason)
        log.info("model %s rejected: %s", model_id, reason)

    def _update_model(self, model_id: str, **values: Any) -> None:
        query = (
            models_table.update().where(models_table.c.id == model_id).values(updated_at=utcnow(), **values)
        )
        with self._tx() as conn:
            if conn.execute(query).rowcount != 1:
                raise NotFound(f"model {model_id!r} does not exist")

    # ---- datasets ----------------------------------------------------------------------------

    def add_dataset(
        self,
        *,
        owner: str,
        name: str,
        sha256: str,
        size_bytes: int,
        num_samples: int,
        sample_shape: list[int],
        num_classes: int,
    ) -> tuple[DatasetRecord, bool]:
        """A new dataset; the same owner and bytes give the existing record."""
        existing = self._dataset_by_sha(owner, sha256)
        if existing is not None:
            return existing, False
        row: dict[str, Any] = {
            "id": new_id("dst"),
            "owner": owner,
            "name": name,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "num_samples": num_samples,
            "sample_shape": [int(d) for d in sample_shape],
            "num_classes": num_classes,
            "created_at": utcnow(),
        }
        try:
            with self._tx() as conn:
                conn.execute(datasets_table.insert().values(**row))
        except IntegrityError:
            existing = self._dataset_by_sha(owner, sha256)
            if existing is None:
                raise
            return existing, False
        log.info("dataset %s added (sha256 %s, %d samples, owner %s)", row["id"], sha256, num_samples, owner)
        return self.get_dataset(row["id"]), True

    def _dataset_by_sha(self, owner: str, sha256: str) -> DatasetRecord | None:
        query = sa.select(datasets_table).where(
            datasets_table.c.owner == owner, datasets_table.c.sha256 == sha256
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(DatasetRecord, row)

    def get_dataset(self, dataset_id: str, *, owner: str | None = None) -> DatasetRecord:
        row = self._get(datasets_table, dataset_id, owner)
        if row is None:
            raise NotFound(f"dataset {dataset_id!r} does not exist")
        return _record(DatasetRecord, row)

    def list_datasets(self, owner: str) -> list[DatasetRecord]:
        return [_record(DatasetRecord, row) for row in self._list(datasets_table, owner)]

    def delete_dataset(self, dataset_id: str, *, owner: str) -> None:
        self._delete(datasets_table, dataset_id, owner, "dataset")

    # ---- API keys (service/auth.py hashes and checks them) --------------------------------------

    def add_api_key(self, *, name: str, key_sha256: str) -> ApiKeyRecord:
        row: dict[str, Any] = {
            "id": new_id("key"),
            "name": name,
            "key_sha256": key_sha256,
            "created_at": utcnow(),
            "revoked_at": None,
        }
        with self._tx() as conn:
            conn.execute(api_keys_table.insert().values(**row))
        log.info("API key %s (%s) created", row["id"], name)
        return ApiKeyRecord(**row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        query = sa.select(api_keys_table).order_by(api_keys_table.c.seq)
        with self.engine.connect() as conn:
            return [_record(ApiKeyRecord, row) for row in conn.execute(query).mappings()]

    def api_key_by_hash(self, key_sha256: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not."""
        with self._connect() as conn:
            row = conn.execute(_API_KEY_BY_HASH, {"key_sha256": key_sha256}).mappings().first()
        return None if row is None else _record(ApiKeyRecord, row)

    def has_api_keys(self) -> bool:
        """Whether any key was ever made; revoked ones count, so revoking the last key never opens the API."""
        with self._connect() as conn:
            return conn.execute(_ANY_API_KEY).first() is not None

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key from now on; `NotFound` for an unknown id. Revoking twice keeps the first time."""
        t = api_keys_table.c
        with self._tx() as conn:
            conn.execute(
                api_keys_table.update()
                .where(t.id == key_id, t.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = conn.execute(sa.select(api_keys_table).where(t.id == key_id)).mappings().first()
        if row is None:
            raise NotFound(f"there is no API key {key_id!r}")
        log.info("API key %s revoked", key_id)
        return _record(ApiKeyRecord, row)

    # ---- shared row helpers ------------------------------------------------------------------

    def _get(self, table: sa.Table, row_id: str, owner: str | None) -> Any:
        query = _select_by_id(table, with_owner=owner is not None)
        with self._connect() as conn:
            params = {"row_id": row_id} if owner is None else {"row_id": row_id, "owner": owner}
            return conn.execute(query, params).mappings().first()

    def _list(self, table: sa.Table, owner: str) -> list[Any]:
        query = sa.select(table).where(table.c.owner == owner).order_by(table.c.seq.desc())
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings().all())

    def _delete(self, table: sa.Table, row_id: str, owner: str, noun: str) -> None:
        query = table.delete().where(table.c.id == row_id, table.c.owner == owner)
        with self._tx() as conn:
            if conn.execute(query).rowcount != 1:
                raise NotFound(f"{noun} {row_id!r} does not exist")
        log.info("%s %s deleted (owner %s)", noun, row_id, owner)

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
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_id("job"),
            "owner": owner,
            "kind": kind,
            "status": "queued",
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
            if reuse.status != "succeeded" or reuse.result is None:
                raise ValueError(f"job {reuse.id} has no result to reuse")
            row.update(
                status="succeeded",
                result=reuse.result,
                progress={"fraction": 1.0, "stage": "done (result reused)", "eta_seconds": 0.0},
                started_at=now,
                finished_at=now,
                reused_from=reuse.reused_from or reuse.id,
            )
        try:
            with self._tx() as conn:
                conn.execute(jobs_table.insert().values(**row))
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
        """The owner's newest succeeded job with this cache key (service/reuse.py), or None."""
        t = jobs_table.c
        query = (
            sa.select(jobs_table)
            .where(t.owner == owner, t.cache_key == cache_key, t.status == "succeeded", t.result.is_not(None))
            # A job that ran, never a reused copy: the API copies a copy's artifacts after creating its row,
            # so a concurrent submission could otherwise copy half of them.
            .where(t.reused_from.is_(None))
            .order_by(t.seq.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(JobRecord, row)

    def model_by_sha(self, owner: str, sha256: str) -> ModelRecord | None:
        """The owner's model with these bytes, or None."""
        return self._model_by_sha(owner, sha256)

    def dataset_by_sha(self, owner: str, sha256: str) -> DatasetRecord | None:
        """The owner's dataset with these bytes, or None."""
        return self._dataset_by_sha(owner, sha256)

    def job_by_idempotency_key(self, owner: str, key: str) -> JobRecord | None:
        query = sa.select(jobs_table).where(jobs_table.c.owner == owner, jobs_table.c.idempotency_key == key)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(JobRecord, row)

    def get_job(self, job_id: str, *, owner: str | None = None) -> JobRecord:
        job = self.find_job(job_id, owner=owner)
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return job

    def find_job(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        """The job, or None when it does not exist (or belongs to another owner)."""
        row = self._get(jobs_table, job_id, owner)
        return None if row is None else _record(JobRecord, row)

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
        return [_record(JobRecord, row) for row in rows[:limit]], next_cursor

    def request_cancel(self, job_id: str, *, owner: str) -> JobRecord:
        """Cancel a job: a queued one (or one whose worker died) at once, a running one at its next report."""
        job = self.get_job(job_id, owner=owner)
        now = utcnow()
        t = jobs_table.c
        with self._tx() as conn:
            done = conn.execute(
                jobs_table.update()
                .where(
                    t.id == job_id,
                    sa.or_(t.status == "queued", sa.and_(t.status == "running", t.lease_until < now)),
                )
                .values(
                    status="cancelled",
                    cancel_requested=True,
                    finished_at=now,
                    updated_at=now,
                    worker=None,
                    lease_until=None,
                    progress=None,
                )
            ).rowcount
            if not done:
                conn.execute(
                    jobs_table.update()
                    .where(t.id == job_id, t.status == "running")
                    .values(cancel_requested=True, updated_at=now)
                )
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
        now = utcnow()
        t = jobs_table.c
        claimable = sa.or_(t.status == "queued", sa.and_(t.status == "running", t.lease_until < now))
        with self._tx() as conn:
            rows = conn.execute(
                jobs_table.update()
                .where(t.id == job_id, claimable, t.cancel_requested.is_(False), t.attempts < t.max_attempts)
                .values(
                    status="running",
                    worker=worker,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=t.attempts + 1,
                    started_at=sa.func.coalesce(t.started_at, sa.literal(now, UTCDateTime)),
                    updated_at=now,
                )
            ).rowcount
        if rows == 1:
            job = self.get_job(job_id)
            log.info(
                "job %s running on %s (attempt %d of %d)", job_id, worker, job.attempts, job.max_attempts
            )
            return job
        self._settle_unclaimable(job_id, now)
        return None

    def _settle_unclaimable(self, job_id: str, now: datetime) -> None:
        """A job nobody may run any more (cancelled while its worker died, or out of attempts) ends here."""
        t = jobs_table.c
        claimable = sa.or_(t.status == "queued", sa.and_(t.status == "running", t.lease_until < now))
        with self._tx() as conn:
            cancelled = conn.execute(
                jobs_table.update()
                .where(t.id == job_id, claimable, t.cancel_requested.is_(True))
                .values(status="cancelled", finished_at=now, updated_at=now, worker=None, lease_until=None)
            ).rowcount
            row = conn.execute(sa.select(t.attempts, t.max_attempts).where(t.id == job_id)).first()
            exhausted = 0
            if not cancelled and row is not None:
                error = {
                    "type": "attempts_exhausted",
                    "detail": f"the job was started {row.attempts} times and its worker stopped each time "
                    "(out of memory or killed); check the model and batch_size, then submit it again",
                }
                exhausted = conn.execute(
                    jobs_table.update()
                    .where(t.id == job_id, claimable, t.attempts >= t.max_attempts)
                    .values(
                        status="failed",
                        error=error,
                        finished_at=now,
                        updated_at=now,
                        worker=None,
                        lease_until=None,
                    )
                ).rowcount
        if cancelled:
            log.info("job %s cancelled (its worker had stopped)", job_id)
        if exhausted:
            log.info("job %s failed: attempts exhausted", job_id)

    def report_progress(self, job_id: str, *, worker: str, progress: Progress, lease_seconds: float) -> bool:
        """Record progress and extend the lease; False means stop: cancel requested or the job is not ours."""
        now = utcnow()
        t = jobs_table.c
        with self._tx() as conn:
            rows = conn.execute(
                jobs_table.update()
                .where(
                    t.id == job_id, t.status == "running", t.worker == worker, t.cancel_requested.is_(False)
                )
                .values(
                    progress=progress.model_dump(mode="json"),
                    lease_until=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            ).rowcount
        return rows == 1

    def finish(
        self,
        job_id: str,
        *,
        worker: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """End a running job held by `worker` as succeeded, failed or cancelled; False if it was not ours."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish() needs a terminal status, got {status!r}")
        now = utcnow()
        t = jobs_table.c
        values: dict[str, Any] = {
            "status": status,
            "result": result,
            "error": error,
            "finished_at": now,
            "updated_at": now,
            "lease_until": None,
        }
        if status == "succeeded":
            values["progress"] = {"fraction": 1.0, "stage": "done", "eta_seconds": 0.0}
        with self._tx() as conn:
            rows = conn.execute(
                jobs_table.update()
                .where(t.id == job_id, t.status == "running", t.worker == worker)
                .values(**values)
            ).rowcount
        if rows == 1:
            suffix = f": {error.get('detail')}" if error else ""
            log.info("job %s %s on %s%s", job_id, status, worker, suffix)
        else:
            log.info(
                "job %s: %s from %s ignored (not the lease holder or already finished)",
                job_id,
                status,
                worker,
            )
        return rows == 1

    def release(self, job_id: str, *, worker: str) -> None:
        """Give a running job back (the worker is shutting down): queued again, attempts kept."""
        now = utcnow()
        t = jobs_table.c
        with self._tx() as conn:
            rows = conn.execute(
                jobs_table.update()
                .where(t.id == job_id, t.status == "running", t.worker == worker)
                .values(
                    status=sa.case((t.cancel_requested.is_(True), "cancelled"), else_="queued"),
                    finished_at=sa.case(
                        (t.cancel_requested.is_(True), sa.literal(now, UTCDateTime)),
                        else_=sa.null(),
                    ),
                    worker=None,
                    lease_until=None,
                    updated_at=now,
                )
            ).rowcount
        if rows:
            log.info("job %s released by %s", job_id, worker)

    def stale_queued_jobs(self, *, older_than_seconds: float) -> list[JobRecord]:
        """Queued jobs untouched for a while: their broker message may be lost, re-enqueue them."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        t = jobs_table.c
        query = sa.select(jobs_table).where(t.status == "queued", t.updated_at < cutoff).order_by(t.seq)
        with self.engine.connect() as conn:
            return [_record(JobRecord, row) for row in conn.execute(query).mappings()]

    def expired_leases(self) -> list[JobRecord]:
        """Running jobs whose worker stopped renewing its lease: re-enqueue them, claim() takes them over."""
        t = jobs_table.c
        query = sa.select(jobs_table).where(t.status == "running", t.lease_until < utcnow()).order_by(t.seq)
        with self.engine.connect() as conn:
            return [_record(JobRecord, row) for row in conn.execute(query).mappings()]

    def count_jobs_by_status(self) -> dict[str, int]:
        """Every owner's jobs counted by status (for /metrics)."""
        query = sa.select(jobs_table.c.status, sa.func.count()).group_by(jobs_table.c.status)
        with self.engine.connect() as conn:
            counts = {status: int(n) for status, n in conn.execute(query)}
        return {status: counts.get(status, 0) for status in JOB_STATUSES}
