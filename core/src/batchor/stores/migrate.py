"""Bring a store's schema to the newest Alembic revision when it opens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

_SCRIPTS = Path(__file__).with_name("migrations")
VERSION_TABLE = "batchor_alembic_version"
# The newest revision in migrations/versions (a test checks it against Alembic's own view).
# Known statically so that opening an up-to-date store does not import Alembic, which
# costs a few hundred milliseconds in every short-lived process (CLI commands, tasks).
HEAD_REVISION = "0009"
# The Postgres advisory lock migrations hold (any constant; "batchor" in ASCII).
_LOCK_KEY = 0x62617463686F72


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def head_revision() -> str:
    """The newest schema revision this version of batchor knows."""
    return HEAD_REVISION


def current_revision(engine: Engine) -> str | None:
    """The revision a store's schema is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        version = sa.table(VERSION_TABLE, sa.column("version_num"))
        return conn.execute(sa.select(version.c.version_num)).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to ``revision`` (no-op when already there)."""
    if revision in ("head", HEAD_REVISION) and current_revision(engine) == HEAD_REVISION:
        return
    _migrate(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the schema down to ``revision`` (for operators undoing an upgrade)."""
    _migrate(engine, "downgrade", revision)


def _migrate(engine: Engine, direction: Literal["upgrade", "downgrade"], revision: str) -> None:
    from alembic import command

    action = command.upgrade if direction == "upgrade" else command.downgrade
    cfg = _config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        if sqlite and driver is not None:
            # A migration that copies a table (SQLite's way to alter one) must not cascade
            # the drop of the old copy into the rows that reference it. The pragma only
            # takes effect outside a transaction, so it goes to the driver directly.
            driver.execute("PRAGMA foreign_keys = OFF")
        conn.info["batchor_write"] = True  # SQLite: take the write lock, one migrator at a time
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    # One migrator at a time; the others find the schema migrated after it.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                cfg.attributes["connection"] = conn
                action(cfg, revision)
        finally:
            if sqlite and driver is not None:
                driver.execute("PRAGMA foreign_keys = ON")
