"""backoff after provider failures, remote cancellation

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy): SQLite and Postgres both support it.
    op.add_column("batchor_runs", sa.Column("backoff_until", sa.Float(), nullable=True))
    op.add_column(
        "batchor_runs",
        sa.Column("backoff_count", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "batchor_runs",
        sa.Column("cancel_remote", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("batchor_batches", sa.Column("not_before", sa.Float(), nullable=True))
    op.add_column(
        "batchor_batches",
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("batchor_batches") as batch_op:
        batch_op.drop_column("failures")
        batch_op.drop_column("not_before")
    with op.batch_alter_table("batchor_runs") as batch_op:
        batch_op.drop_column("cancel_remote")
        batch_op.drop_column("backoff_count")
        batch_op.drop_column("backoff_until")
