"""Bring a store's schema to the newest Alembic revision when it opens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

_SCRIPTS = Path(__file__).with_name("migrations")
VERSION_TABLE = "batchor_alembic_version"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def head_revision() -> str:
    """The newest schema revision this version of batchor knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision a store's schema is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to ``revision`` (no-op when already there)."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the schema down to ``revision`` (for operators undoing an upgrade)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, action: Callable[[Config, str], None], revision: str) -> None:
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
                cfg.attributes["connection"] = conn
                action(cfg, revision)
        finally:
            if sqlite and driver is not None:
                driver.execute("PRAGMA foreign_keys = ON")
