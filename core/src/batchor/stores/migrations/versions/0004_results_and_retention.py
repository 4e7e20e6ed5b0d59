"""result pages, lineage, retention and collect records

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batchor_runs",
        sa.Column("done_tick", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("batchor_runs", sa.Column("source_parts", sa.Text(), nullable=True))
    op.add_column("batchor_runs", sa.Column("exported_at", sa.Float(), nullable=True))
    op.add_column("batchor_runs", sa.Column("pruned_at", sa.Float(), nullable=True))
    op.add_column("batchor_runs", sa.Column("collected", sa.Text(), nullable=True))
    op.add_column("batchor_items", sa.Column("done_tick", sa.Integer(), nullable=True))
    # Items that ended before this version are the first page: tick 0, in item order.
    op.execute(
        "UPDATE batchor_items SET done_tick = 0 "
        "WHERE status IN ('completed', 'failed', 'cancelled')"
    )
    op.create_index(
        "ix_batchor_items_done",
        "batchor_items",
        ["run_pk", "done_tick", "seq"],
        sqlite_where=sa.text("done_tick IS NOT NULL"),
        postgresql_where=sa.text("done_tick IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_batchor_items_done", "batchor_items")
    with op.batch_alter_table("batchor_items") as batch_op:
        batch_op.drop_column("done_tick")
    with op.batch_alter_table("batchor_runs") as batch_op:
        for name in ("collected", "pruned_at", "exported_at", "source_parts", "done_tick"):
            batch_op.drop_column(name)
