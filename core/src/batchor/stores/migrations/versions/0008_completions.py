"""completions appended, not written into the item rows: batchor_completions, and the
count of each batch's completed items

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batchor_completions",
        sa.Column("run_pk", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("output_text", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("done_tick", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_pk", "seq"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_batchor_completions_done",
        "batchor_completions",
        ["run_pk", "done_tick", "seq"],
    )
    op.add_column(
        "batchor_batches",
        sa.Column("completed", sa.Integer(), nullable=False, server_default="0"),
    )
    # Items in a batch stay queued from now on (the batch's status says it was sent): those
    # 0007 marked submitted when their batch was created are queued again, so only items
    # sent synchronously (in no batch) are submitted.
    op.execute(
        "UPDATE batchor_items SET status = 'queued'"
        " WHERE status = 'submitted' AND batch_pk IS NOT NULL"
    )


def downgrade() -> None:
    # Fold the completions back into their items' rows first, as 0007 kept them.
    mine = "c.run_pk = batchor_items.run_pk AND c.seq = batchor_items.seq"

    def of(column: str) -> str:
        return f"(SELECT c.{column} FROM batchor_completions c WHERE {mine})"

    op.execute(
        "UPDATE batchor_items SET status = 'completed', error_class = NULL,"
        " error_message = NULL, error_retryable = NULL, error_attempt = NULL,"
        + ", ".join(
            f" {column} = {of(column)}"
            for column in ("attempts", "output_text", "input_tokens", "output_tokens", "done_tick")
        )
        + f" WHERE EXISTS (SELECT 1 FROM batchor_completions c WHERE {mine})"
    )
    # ... and items of batches the provider holds are submitted again, as 0007 wrote them.
    op.execute(
        "UPDATE batchor_items SET status = 'submitted' WHERE status = 'queued' AND batch_pk IN"
        " (SELECT pk FROM batchor_batches WHERE status IN ('submitted', 'ended'))"
    )
    with op.batch_alter_table("batchor_batches") as batch_op:
        batch_op.drop_column("completed")
    op.drop_index("ix_batchor_completions_done", table_name="batchor_completions")
    op.drop_table("batchor_completions")
