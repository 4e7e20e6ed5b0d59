"""Turn a store URL into a state store."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from batchor.errors import ConfigurationError
from batchor.stores.memory import memory_store
from batchor.stores.sql import SqlStateStore


def open_store(url: str) -> SqlStateStore:
    """Open the store at ``url``: ``sqlite:///path``, ``postgresql+psycopg://...`` or
    ``memory://``. A SQLite file's directory is created if missing."""
    if url in ("memory://", "memory:"):
        return memory_store()
    try:
        parsed = sa.make_url(url)
    except Exception:
        raise ConfigurationError(
            f"store URL {url!r} is not valid; use sqlite:///path/to/batchor.db, "
            "postgresql+psycopg://user@host/db or memory://"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return memory_store()
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return SqlStateStore(sa.create_engine(parsed))
    if backend == "postgresql":
        try:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(
                f"store URL {parsed.render_as_string(hide_password=True)!r} needs the "
                f"{exc.name} driver: pip install 'batchor[postgres]'"
            ) from None
        return SqlStateStore(engine)
    raise ConfigurationError(
        f"store URL scheme {parsed.drivername!r} is not supported; use sqlite, postgresql or memory"
    )
