"""jobs.phase: NULL for a job that runs whole, 'sharded' for an evaluation whose shards carry the leases.

Until now a sharded job was marked by the sentinel worker '(shards)'; those rows get the phase here, and
no worker (nobody holds such a job itself). The downgrade puts the sentinel back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_jobs_phase"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

# What this revision reads and writes, written out so that later changes to schema.py cannot change it.
_jobs = sa.table("jobs", sa.column("worker", sa.String), sa.column("phase", sa.String))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("phase", sa.String(16), nullable=True))
    op.execute(_jobs.update().where(_jobs.c.worker == "(shards)").values(phase="sharded", worker=None))


def downgrade() -> None:
    op.execute(_jobs.update().where(_jobs.c.phase == "sharded").values(worker="(shards)"))
    # Batch mode: PostgreSQL drops the column in place, SQLite gets the table rebuilt with its rows copied.
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("phase")
