"""The store's tables as older releases created them, before versioned migrations, and rows to put in them.

Written out from `git show <commit>:service/db.py` so the upgrade tests start from what those releases
really left on disk: `metadata.create_all` of these tables, no `alembic_version`. Datetimes are plain
naive-UTC DateTime here (what the old UTCDateTime stored), so rows are inserted and read back as stored.

- fbde16a, the first release: every table, but `models` without `trainable` and `validation_attempts`
  (99a50b1 and 010a17e added those with ALTER TABLE at start-up).
- 816b7be, the last release before Alembic: the baseline revision's schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

RELEASES = ("fbde16a", "816b7be")

_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON(none_as_null=True)


def old_metadata(release: str) -> sa.MetaData:
    """The tables `release` created, as its `metadata.create_all` made them."""
    if release not in RELEASES:
        raise ValueError(f"no schema written out for {release!r}")
    metadata = sa.MetaData()
    models_later: list[sa.Column[Any]] = (
        []
        if release == "fbde16a"
        else [
            sa.Column("trainable", sa.Boolean),
            sa.Column("validation_attempts", sa.Integer, nullable=False, default=0),
        ]
    )
    sa.Table(
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
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        *models_later,
        sa.UniqueConstraint("owner", "sha256", name="uq_models_owner_sha256"),
    )
    sa.Table(
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
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),
    )
    sa.Table(
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
        sa.Column("max_attempts", sa.Integer, nullable=False, default=3),
        sa.Column("worker", sa.String(300)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
        sa.Column("idempotency_key", sa.String(300)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("reused_from", sa.String(64)),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        sa.Index("ix_jobs_owner_seq", "owner", "seq"),
        sa.Index("ix_jobs_status_updated", "status", "updated_at"),
        sa.Index("ix_jobs_owner_cache_key", "owner", "cache_key"),
    )
    sa.Table(
        "evaluation_plans",
        metadata,
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("num_shards", sa.Integer, nullable=False),
        sa.Column("shards_done", sa.Integer, nullable=False, default=0),
        sa.Column("clean_units", sa.Float, nullable=False),
        sa.Column("total_units", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    sa.Table(
        "job_shards",
        metadata,
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("shard_index", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batch_start", sa.Integer, nullable=False),
        sa.Column("batch_stop", sa.Integer, nullable=False),
        sa.Column("units", sa.Float, nullable=False),
        sa.Column("fraction", sa.Float, nullable=False, default=0.0),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("max_attempts", sa.Integer, nullable=False, default=3),
        sa.Column("worker", sa.String(300)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("error", _Json),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.UniqueConstraint("job_id", "shard_index", name="uq_job_shards_job_index"),
        sa.Index("ix_job_shards_status_updated", "status", "updated_at"),
    )
    sa.Table(
        "api_keys",
        metadata,
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
    )
    return metadata


_T0 = datetime(2026, 11, 1, 9, 30, 0)
_T1 = datetime(2026, 11, 1, 9, 45, 12, 345000)


def old_rows(release: str) -> dict[str, list[dict[str, Any]]]:
    """Rows an older release could have written, by table: one of each thing, jobs in several states."""
    model: dict[str, Any] = {
        "id": "mdl_old",
        "owner": "local",
        "name": "cnn.keras",
        "sha256": "a" * 64,
        "format": "keras",
        "size_bytes": 123_456,
        "status": "ready",
        "input_shape": [28, 28, 1],
        "num_classes": 10,
        "output": "logits",
        "rejection": None,
        "created_at": _T0,
        "updated_at": _T1,
    }
    if release != "fbde16a":
        model |= {"trainable": True, "validation_attempts": 1}
    job: dict[str, Any] = {
        "owner": "local",
        "kind": "evaluation",
        "status": "queued",
        "spec": {"model_id": "mdl_old", "dataset": "mnist", "attacks": [{"name": "pgd", "eps": 0.3}]},
        "result": None,
        "error": None,
        "progress": None,
        "attempts": 0,
        "max_attempts": 3,
        "worker": None,
        "lease_until": None,
        "cancel_requested": False,
        "idempotency_key": None,
        "created_at": _T0,
        "updated_at": _T0,
        "started_at": None,
        "finished_at": None,
        "cache_key": None,
        "reused_from": None,
    }
    jobs = [
        job | {"id": "job_queued", "idempotency_key": "ci-run-7"},
        job
        | {
            "id": "job_running",
            "status": "running",
            "attempts": 1,
            "worker": "celery@gpu-1",
            "lease_until": _T1,
            "started_at": _T0,
            "progress": {"fraction": 0.25},
        },
        job
        | {
            "id": "job_sharded",
            "status": "running",
            "attempts": 1,
            "worker": "(shards)",
            "lease_until": None,
            "started_at": _T0,
            "progress": {"fraction": 0.5},
        },
        job
        | {
            "id": "job_succeeded",
            "status": "succeeded",
            "attempts": 1,
            "worker": "celery@cpu-2",
            "started_at": _T0,
            "finished_at": _T1,
            "result": {"clean_accuracy": 0.99},
            "cache_key": "c" * 64,
        },
        job
        | {
            "id": "job_reused",
            "status": "succeeded",
            "result": {"clean_accuracy": 0.99},
            "cache_key": "c" * 64,
            "reused_from": "job_succeeded",
            "finished_at": _T0,
        },
        job
        | {
            "id": "job_failed",
            "status": "failed",
            "attempts": 3,
            "finished_at": _T1,
            "error": {"type": "ModelLoadError", "detail": "bad archive"},
        },
        job
        | {
            "id": "job_cancelled",
            "kind": "training",
            "status": "cancelled",
            "cancel_requested": True,
            "finished_at": _T1,
        },
    ]
    return {
        "models": [model],
        "datasets": [
            {
                "id": "dst_old",
                "owner": "local",
                "name": "digits.npz",
                "sha256": "b" * 64,
                "size_bytes": 9_000,
                "num_samples": 100,
                "sample_shape": [8, 8, 1],
                "num_classes": 10,
                "created_at": _T0,
            },
        ],
        "jobs": jobs,
        "evaluation_plans": [
            {
                "job_id": "job_sharded",
                "num_shards": 2,
                "shards_done": 1,
                "clean_units": 1.0,
                "total_units": 81.0,
                "created_at": _T0,
            },
        ],
        "job_shards": [
            {
                "job_id": "job_sharded",
                "shard_index": 0,
                "status": "succeeded",
                "batch_start": 0,
                "batch_stop": 4,
                "units": 40.0,
                "fraction": 1.0,
                "attempts": 1,
                "max_attempts": 3,
                "worker": "celery@gpu-1",
                "lease_until": None,
                "error": None,
                "created_at": _T0,
                "updated_at": _T1,
                "finished_at": _T1,
            },
            {
                "job_id": "job_sharded",
                "shard_index": 1,
                "status": "running",
                "batch_start": 4,
                "batch_stop": 8,
                "units": 40.0,
                "fraction": 0.5,
                "attempts": 2,
                "max_attempts": 3,
                "worker": "celery@gpu-2",
                "lease_until": _T1,
                "error": {"previous": "worker lost"},
                "created_at": _T0,
                "updated_at": _T1,
                "finished_at": None,
            },
        ],
        "api_keys": [
            {"id": "key_ci", "name": "ci", "key_sha256": "d" * 64, "created_at": _T0, "revoked_at": None},
            {
                "id": "key_old",
                "name": "old laptop",
                "key_sha256": "e" * 64,
                "created_at": _T0,
                "revoked_at": _T1,
            },
        ],
    }


def create_old_database(engine: sa.Engine, release: str) -> dict[str, list[dict[str, Any]]]:
    """Create `release`'s tables on `engine`, fill them with `old_rows(release)` and return those rows."""
    metadata = old_metadata(release)
    rows = old_rows(release)
    with engine.begin() as conn:
        metadata.create_all(conn)
        for table in metadata.sorted_tables:
            conn.execute(table.insert(), rows[table.name])
    return rows
