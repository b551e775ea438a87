"""datasets.min_value / max_value: an upload's value range, so a submission checks it against `input_range`;
models.warnings: reasons to distrust a registered model (a training that left it worse than its upload).

Rows of older releases keep NULL: their range is unknown (the submission check skips them) and they carry
no warning.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_value_ranges"
down_revision = "0003_job_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("min_value", sa.Float, nullable=True))
    op.add_column("datasets", sa.Column("max_value", sa.Float, nullable=True))
    op.add_column("models", sa.Column("warnings", sa.JSON, nullable=True))


def downgrade() -> None:
    # Batch mode: PostgreSQL drops the columns in place, SQLite gets the tables rebuilt with their rows.
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("max_value")
        batch.drop_column("min_value")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("warnings")
