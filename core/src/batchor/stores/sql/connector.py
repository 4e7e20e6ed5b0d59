"""The connector: the SQLAlchemy engine, its per-backend configuration (SQLite's WAL and
``BEGIN IMMEDIATE``, Postgres's text escaping) and the transactions every operation runs in.
The operations themselves (runs.py, items.py, batches.py, collect.py, reads.py) build on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from batchor.stores.migrate import upgrade
from batchor.stores.values import register_postgres_adapters


def now() -> float:
    """The store's clock (one place, so a test can move it)."""
    return time.time()


class SqlConnector:
    """An engine configured for batchor, and its reading and writing transactions.

    On SQLite it runs in WAL mode and takes the write lock at the start of every writing
    transaction (``BEGIN IMMEDIATE``), so concurrent workers queue instead of deadlocking.
    The schema is migrated to the newest version when the store opens.
    """

    thread_safe: bool
    """Whether two threads may use the store at once (each with its own connection)."""

    def __init__(self, engine: Engine, *, migrate: bool = True) -> None:
        self.engine = engine
        # One shared connection (the in-memory store) cannot carry two threads' transactions.
        self.thread_safe = not isinstance(engine.pool, StaticPool)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        elif engine.dialect.driver == "psycopg":
            sa.event.listen(engine, "connect", _on_postgres_connect)
        if migrate:  # read-only users open a store as it is (`open_store(create=False)`)
            upgrade(engine)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A writing transaction (on SQLite it holds the write lock from its start)."""
        with self.engine.connect() as conn:
            conn.info["batchor_write"] = True
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A reading transaction (one snapshot)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for writing transactions."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.info.pop("batchor_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _on_postgres_connect(dbapi_conn: Any, _record: Any) -> None:
    """Set up a new psycopg connection: text Postgres cannot hold (NUL, lone surrogates) is
    escaped by the driver, and no statement is prepared on the server. After five runs a
    prepared statement may be given a generic plan, made without its values; on a table
    filled since its last ANALYZE (a run's items, always) that plan read a chunk's items
    through the wrong index and made applying a batch's outcomes cost twice as much. Every
    statement is planned for its own values instead (a fraction of a millisecond each)."""
    register_postgres_adapters(dbapi_conn)
    dbapi_conn.prepare_threshold = None
