"""enqueued-token budget

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batchor_items", sa.Column("est_tokens", sa.Integer(), nullable=True))
    op.add_column("batchor_batches", sa.Column("est_tokens", sa.BigInteger(), nullable=True))
    op.add_column("batchor_batches", sa.Column("quota_scope", sa.String(300), nullable=True))
    op.add_column(
        "batchor_batches",
        sa.Column("reserved", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "batchor_token_budget",
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("in_flight", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("batchor_token_budget")
    with op.batch_alter_table("batchor_batches") as batch_op:
        batch_op.drop_column("reserved")
        batch_op.drop_column("quota_scope")
        batch_op.drop_column("est_tokens")
    with op.batch_alter_table("batchor_items") as batch_op:
        batch_op.drop_column("est_tokens")
