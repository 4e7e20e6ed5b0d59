"""An in-memory state store for tests and throwaway runs (lost when the process exits)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from batchor.stores.sql import SqlStateStore


def memory_store() -> SqlStateStore:
    """A fresh store held in this process's memory.

    It is the SQL store on a private in-memory SQLite database, so it behaves exactly like the
    durable stores, transactions and all.
    """
    engine = sa.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    return SqlStateStore(engine)
