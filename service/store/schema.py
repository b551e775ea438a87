"""The SQL side of the job store: tables and engine set-up.

SQLite (the default, a file in the data directory) and PostgreSQL both work; every statement the
store issues is portable between them. A change to these tables comes with a migration in
service/store/migrations/versions/; a test fails when the two disagree.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

DEFAULT_MAX_ATTEMPTS = 3


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stores naive UTC (SQLite keeps no zone) and always hands back aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON(none_as_null=True)

metadata = sa.MetaData()

models_table = sa.Table(
    "models",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(200), nullable=False, index=True),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input_shape", _Json),
    sa.Column("num_classes", sa.Integer),
    sa.Column("output", sa.String(16), nullable=False),
    sa.Column("rejection", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Whether validation found trainable variables (null: not known yet, or validated by older code).
    sa.Column("trainable", sa.Boolean),
    # Workers that started validating this model; one that never finished was killed or crashed loading it.
    sa.Column("validation_attempts", sa.Integer, nullable=False, default=0),
    # Sentences for people: why to distrust the model (a training that left it worse than its upload).
    sa.Column("warnings", _Json),
    sa.UniqueConstraint("owner", "sha256", name="uq_models_owner_sha256"),
)

datasets_table = sa.Table(
    "datasets",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(200), nullable=False, index=True),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("num_samples", sa.BigInteger, nullable=False),
    sa.Column("sample_shape", _Json, nullable=False),
    sa.Column("num_classes", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The smallest and largest value of `x`, checked against a job's input_range at submission (null: an
    # upload of an older release, whose range is not known).
    sa.Column("min_value", sa.Float),
    sa.Column("max_value", sa.Float),
    sa.UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),
)

jobs_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("spec", _Json, nullable=False),
    sa.Column("result", _Json),
    sa.Column("error", _Json),
    sa.Column("progress", _Json),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=DEFAULT_MAX_ATTEMPTS),
    sa.Column("worker", sa.String(300)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("idempotency_key", sa.String(300)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    # Result reuse (service/domain/reuse.py): the key of what decides the result, and the job whose
    # result was given.
    sa.Column("cache_key", sa.String(64)),
    sa.Column("reused_from", sa.String(64)),
    # service/domain/jobs.py JobPhase: NULL for a job held whole, "sharded" while its shards hold it.
    # Migration 0002 backfills it from the worker sentinel '(shards)' that older code wrote.
    sa.Column("phase", sa.String(16)),
    # NULL keys are distinct in both SQLite and PostgreSQL, so jobs without a key never collide.
    sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    sa.Index("ix_jobs_owner_seq", "owner", "seq"),
    sa.Index("ix_jobs_status_updated", "status", "updated_at"),
    sa.Index("ix_jobs_owner_cache_key", "owner", "cache_key"),
)


# The job change feed (service/store/changes.py): one row per change of a job's row, written in the
# transaction that makes it, so an API process can tell which of the jobs it keeps in memory changed.
# `txid` is the writing transaction's id on PostgreSQL (NULL on SQLite, whose writers commit in `seq`
# order); readers use it to find rows that committed out of `seq` order. Old rows are pruned by `seq`.
job_changes_table = sa.Table(
    "job_changes",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("txid", sa.BigInteger),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    sa.Index("ix_job_changes_txid", "txid"),
)

# A sharded evaluation (workers/runners/sharded.py): one plan row per parent job, one row per shard.
# Shards have their own claim and lease like jobs; `shards_done` is the counter whose last increment
# elects the merging worker.
evaluation_plans_table = sa.Table(
    "evaluation_plans",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("num_shards", sa.Integer, nullable=False),
    sa.Column("shards_done", sa.Integer, nullable=False, default=0),
    # Progress weights: the clean pass (done before the plan exists) and all the work, in gradient passes.
    sa.Column("clean_units", sa.Float, nullable=False),
    sa.Column("total_units", sa.Float, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

job_shards_table = sa.Table(
    "job_shards",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("shard_index", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # Global batch indices [batch_start, batch_stop) of every attack run that this shard computes.
    sa.Column("batch_start", sa.Integer, nullable=False),
    sa.Column("batch_stop", sa.Integer, nullable=False),
    sa.Column("units", sa.Float, nullable=False),
    sa.Column("fraction", sa.Float, nullable=False, default=0.0),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=DEFAULT_MAX_ATTEMPTS),
    sa.Column("worker", sa.String(300)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("error", _Json),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.UniqueConstraint("job_id", "shard_index", name="uq_job_shards_job_index"),
    sa.Index("ix_job_shards_status_updated", "status", "updated_at"),
)

# API keys made with `parry keys create`. Only a hash is kept; the key itself is shown once, at creation.
# A revoked key keeps its row (revoked_at set), so a database that ever had a key never falls back to
# open mode.
api_keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
)


def make_engine(database_url: str) -> Engine:
    url = sa.make_url(database_url)
    if url.get_backend_name() != "sqlite":
        # The API reads from up to 40 threads (anyio's default); with SQLAlchemy's default pool of 5 + 10
        # overflow, busy periods opened and closed a PostgreSQL connection per request. Connections are
        # opened only when that many are in use at once, so an idle worker process still holds one or two.
        return sa.create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20, future=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, future=True)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets the API read while a worker writes; busy_timeout waits for the writer instead of failing.
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        # Switching a new file to WAL takes an exclusive lock and does not wait for one: two processes
        # opening a new database at once (an API and a worker starting) saw "database is locked". Once
        # one has switched, the other's switch is a no-op, so a few short retries settle it.
        for attempt in itertools.count(1):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 50:
                    raise
                time.sleep(0.1)
        cursor.close()

    return engine
