"""finishing the stragglers: finish mode, the synchronous sender's claim and usage, duplicates

Revision ID: 0007
Revises: 0006
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_RUN_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("finish_since", sa.Float(), nullable=True),
    sa.Column("finish_mode", sa.String(16), nullable=True),
    sa.Column("sync_owner", sa.String(200), nullable=True),
    sa.Column("sync_lease_until", sa.Float(), nullable=True),
    sa.Column("sync_answered", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("sync_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("sync_output_tokens", sa.BigInteger(), nullable=False, server_default="0"),
)
_BATCH_COLUMNS: tuple[sa.Column[Any], ...] = (sa.Column("duplicates", sa.Integer(), nullable=True),)


def upgrade() -> None:
    for column in _RUN_COLUMNS:
        op.add_column("batchor_runs", column)
    for column in _BATCH_COLUMNS:
        op.add_column("batchor_batches", column)


def downgrade() -> None:
    with op.batch_alter_table("batchor_batches") as batch_op:
        for column in reversed(_BATCH_COLUMNS):
            batch_op.drop_column(column.name)
    with op.batch_alter_table("batchor_runs") as batch_op:
        for column in reversed(_RUN_COLUMNS):
            batch_op.drop_column(column.name)
