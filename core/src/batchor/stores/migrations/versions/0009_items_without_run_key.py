"""items without a foreign key to their run: checking it took about half of each item's insert
on Postgres (a row lock on the run per item); deleting a run locks its row, then deletes its
items itself

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite keeps the constraint unnamed; batch mode names it so that it can drop it.
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s"}
_FK = "fk_batchor_items_run_pk"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite drops a constraint by copying the table (clustered on its key, as it was).
        with op.batch_alter_table(
            "batchor_items",
            recreate="always",
            naming_convention=_NAMING,
            table_kwargs={"sqlite_with_rowid": False},
        ) as batch_op:
            batch_op.drop_constraint(_FK, type_="foreignkey")
        return
    for key in sa.inspect(bind).get_foreign_keys("batchor_items"):
        if key["referred_table"] == "batchor_runs" and key["name"]:
            op.drop_constraint(key["name"], "batchor_items", type_="foreignkey")


def downgrade() -> None:
    # Items of a run no longer there would fail the key (Postgres) or break it unseen
    # (SQLite, which checks nothing while migrating): they belong to nothing; they go.
    op.execute(
        "DELETE FROM batchor_items WHERE NOT EXISTS"
        " (SELECT 1 FROM batchor_runs WHERE batchor_runs.pk = batchor_items.run_pk)"
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table(
            "batchor_items", recreate="always", table_kwargs={"sqlite_with_rowid": False}
        ) as batch_op:
            batch_op.create_foreign_key(_FK, "batchor_runs", ["run_pk"], ["pk"], ondelete="CASCADE")
        return
    op.create_foreign_key(
        None, "batchor_items", "batchor_runs", ["run_pk"], ["pk"], ondelete="CASCADE"
    )
