"""time and money controls: deadlines, spending caps, batch timeouts, webhooks

Revision ID: 0006
Revises: 0005
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_RUN_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("deadline_at", sa.Float(), nullable=True),
    sa.Column("max_cost_usd", sa.Float(), nullable=True),
    sa.Column("pause_code", sa.String(32), nullable=True),
    sa.Column("webhook_at", sa.Float(), nullable=True),
)
_BATCH_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("submitted_at", sa.Float(), nullable=True),
    sa.Column("est_cost_usd", sa.Float(), nullable=True),
    sa.Column("cost_usd", sa.Float(), nullable=True),
    sa.Column("stop_reason", sa.String(32), nullable=True),
    sa.Column("stop_requested_at", sa.Float(), nullable=True),
    sa.Column("requeued", sa.Integer(), nullable=True),
)


def upgrade() -> None:
    for column in _RUN_COLUMNS:
        op.add_column("batchor_runs", column)
    for column in _BATCH_COLUMNS:
        op.add_column("batchor_batches", column)
    op.create_index(
        "ix_batchor_batches_provider_batch", "batchor_batches", ["provider_batch_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_batchor_batches_provider_batch", table_name="batchor_batches")
    with op.batch_alter_table("batchor_batches") as batch_op:
        for column in reversed(_BATCH_COLUMNS):
            batch_op.drop_column(column.name)
    with op.batch_alter_table("batchor_runs") as batch_op:
        for column in reversed(_RUN_COLUMNS):
            batch_op.drop_column(column.name)
