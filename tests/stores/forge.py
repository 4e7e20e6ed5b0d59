"""Forge store states the port never makes on purpose (a crash between two writes, another
worker's claim, a clock far off), by writing the row's columns straight to the real database.
For tests only: the engine changes a batch through the port's named transitions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from batchor.stores.base import StateStore
from batchor.stores.schema import batches


def forge_batch(store: StateStore, batch_pk: int, **columns: Any) -> bool:
    """Set the batch's columns as given (statuses by value); True if the row exists."""
    values = {k: getattr(v, "value", v) for k, v in columns.items()}
    engine: sa.Engine = getattr(store, "engine")  # noqa: B009 - the SQL store's engine
    with engine.begin() as conn:
        return (
            conn.execute(batches.update().where(batches.c.pk == batch_pk).values(**values)).rowcount
            == 1
        )
