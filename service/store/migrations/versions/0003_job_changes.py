"""job_changes: the job change feed (service/store/changes.py), one row per change of a job's row.

A new table only, so a process of the previous release keeps working on an upgraded database. It writes
no feed rows, so while one runs an API of this release may show its changes late: by at most the job
cache's `max_age` (5 s; docs/operations.md). The downgrade drops the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_job_changes"
down_revision = "0002_jobs_phase"
branch_labels = None
depends_on = None

_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job_changes",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("txid", sa.BigInteger),
        sa.Column("changed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_job_changes_txid", "job_changes", ["txid"])


def downgrade() -> None:
    op.drop_index("ix_job_changes_txid", table_name="job_changes")
    op.drop_table("job_changes")
