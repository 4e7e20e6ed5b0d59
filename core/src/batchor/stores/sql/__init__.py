"""The SQL state store (SQLAlchemy Core), for SQLite and Postgres.

- ``connector``: the engine, its per-backend set-up and the transactions;
- ``runs``, ``items``, ``batches``, ``collect``, ``reads``: the operations, by what they touch;
- ``statements``: the statements compiled once; ``failures``: recording failed attempts;
- ``bulk``: the driver-level executemany and cursor paths; ``rows``: row mapping.
"""

from batchor.stores.sql.store import SqlStateStore

__all__ = ["SqlStateStore"]
