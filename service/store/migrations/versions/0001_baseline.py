"""Baseline: the schema of the last release before versioned migrations (816b7be).

A snapshot written out, not read from service/store/schema.py, so that later changes to the tables there
never change what this revision creates. Databases made by older code already have these tables and are
stamped at this revision instead of running it (service/store/migrations/__init__.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# As in schema.py: SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
# Datetimes are naive UTC (schema.UTCDateTime converts), JSON is SQLAlchemy's portable JSON.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
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
        sa.Column("trainable", sa.Boolean),
        sa.Column("validation_attempts", sa.Integer, nullable=False),
        sa.UniqueConstraint("owner", "sha256", name="uq_models_owner_sha256"),
    )
    op.create_index("ix_models_owner", "models", ["owner"])

    op.create_table(
        "datasets",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("num_samples", sa.BigInteger, nullable=False),
        sa.Column("sample_shape", _Json, nullable=False),
        sa.Column("num_classes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),
    )
    op.create_index("ix_datasets_owner", "datasets", ["owner"])

    op.create_table(
        "jobs",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", _Json, nullable=False),
        sa.Column("result", _Json),
        sa.Column("error", _Json),
        sa.Column("progress", _Json),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(300)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("idempotency_key", sa.String(300)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("reused_from", sa.String(64)),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    )
    op.create_index("ix_jobs_owner_seq", "jobs", ["owner", "seq"])
    op.create_index("ix_jobs_status_updated", "jobs", ["status", "updated_at"])
    op.create_index("ix_jobs_owner_cache_key", "jobs", ["owner", "cache_key"])

    op.create_table(
        "evaluation_plans",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("num_shards", sa.Integer, nullable=False),
        sa.Column("shards_done", sa.Integer, nullable=False),
        sa.Column("clean_units", sa.Float, nullable=False),
        sa.Column("total_units", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "job_shards",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("shard_index", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batch_start", sa.Integer, nullable=False),
        sa.Column("batch_stop", sa.Integer, nullable=False),
        sa.Column("units", sa.Float, nullable=False),
        sa.Column("fraction", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(300)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("error", _Json),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.UniqueConstraint("job_id", "shard_index", name="uq_job_shards_job_index"),
    )
    op.create_index("ix_job_shards_status_updated", "job_shards", ["status", "updated_at"])

    op.create_table(
        "api_keys",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
    )


def downgrade() -> None:
    for table in ("api_keys", "job_shards", "evaluation_plans", "jobs", "datasets", "models"):
        op.drop_table(table)
