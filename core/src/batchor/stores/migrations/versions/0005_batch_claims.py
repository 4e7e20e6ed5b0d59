"""batch claims: which worker creates or collects a batch, and its lease

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batchor_batches", sa.Column("claimed_by", sa.String(200), nullable=True))
    op.add_column("batchor_batches", sa.Column("lease_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batchor_batches") as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("claimed_by")
