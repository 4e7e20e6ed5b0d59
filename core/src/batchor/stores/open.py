"""Turn a store URL into a state store."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from batchor.errors import ConfigurationError, StoreUnavailableError
from batchor.stores.memory import memory_store
from batchor.stores.migrate import HEAD_REVISION, current_revision
from batchor.stores.sql import SqlStateStore

log = logging.getLogger("batchor")

DEFAULT_CONNECT_TIMEOUT = 5
"""Seconds a Postgres connection may take before it fails, unless the URL's
``connect_timeout`` (or ``PGCONNECT_TIMEOUT``) says otherwise."""
SLOW_CONNECT_NOTICE = 2.0
"""Seconds after which opening a Postgres store logs that it is still connecting."""
_VALID_URLS = "sqlite:///path/to/batchor.db, postgresql+psycopg://user@host/db or memory://"
_CREATED_BY = "`batchor run`, `start` or `db upgrade` create one"


def open_store(url: str, *, create: bool = True) -> SqlStateStore:
    """Open the store at ``url``: ``sqlite:///path``, ``postgresql+psycopg://...`` or
    ``memory://``.

    With ``create`` (writing commands), a missing store is created (a SQLite file's directory
    too) and an older schema is migrated. Without it (read-only commands), the store must
    already hold batchor's tables at the current revision: nothing is created or migrated.

    Raises:
        ConfigurationError: the URL is invalid or unsupported, the SQLite file cannot be
            opened or is not a SQLite database, or (``create=False``) there is no store at
            ``url``. The message names the URL, without its password.
        StoreUnavailableError: the Postgres server did not answer.
    """
    if _is_memory(url):
        if not create:
            raise ConfigurationError(
                f"store {url!r} holds no runs: an in-memory store lives only in the process "
                "that made it; give the sqlite:// or postgresql:// URL of the store"
            )
        return memory_store()
    with _opening(url, create=create) as (engine, shown):
        if not create:
            _check_current(engine, shown)
            engine.dispose()  # the store configures its own connections
        return SqlStateStore(engine, migrate=create)


def store_revision(url: str) -> str | None:
    """The schema revision of the store at ``url``, ``None`` if there is none yet (nothing
    is created). Errors as `open_store`'s."""
    if _is_memory(url):
        return None
    with _opening(url, create=False, must_exist=False) as (engine, _shown):
        if engine is None:
            return None
        try:
            return current_revision(engine)
        finally:
            engine.dispose()


def _is_memory(url: str) -> bool:
    if url in ("memory://", "memory:"):
        return True
    if url.startswith("memory:"):
        raise ConfigurationError(
            f"store URL {url!r} is not valid: an in-memory store takes no name or path; "
            "use memory://"
        )
    return url in ("sqlite:///:memory:", "sqlite://:memory:")


@contextmanager
def _opening(url: str, *, create: bool, must_exist: bool = True) -> Iterator[Any]:
    """The engine for ``url`` and the URL to show, with the errors of opening it turned into
    one-line errors that name the URL (``engine`` is ``None`` when a SQLite file is missing
    and need not exist)."""
    try:
        parsed = sa.make_url(url)
    except Exception:
        raise ConfigurationError(f"store URL {url!r} is not valid; use {_VALID_URLS}") from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(parsed, shown, create=create, must_exist=must_exist)
        engine = None if path is None else sa.create_engine(parsed)
        try:
            yield engine, shown
        except sa.exc.DBAPIError as exc:
            if engine is not None:
                engine.dispose()
            reason = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
            if "locked" in reason or "busy" in reason:
                raise  # another process holds the file: not a problem with the URL
            if "not a database" in reason:
                raise ConfigurationError(
                    f"store {shown}: {path} is not a SQLite database ({reason})"
                ) from None
            raise ConfigurationError(f"store {shown}: cannot open {path}: {reason}") from None
        except BaseException:
            if engine is not None:
                engine.dispose()
            raise
        return
    if backend != "postgresql":
        raise ConfigurationError(
            f"store URL scheme {parsed.drivername!r} is not supported; use {_VALID_URLS}"
        )
    connect_args = {}
    timeout = parsed.query.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
    if not timeout:
        connect_args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"store URL {shown!r} needs the {exc.name} driver: pip install 'batchor[postgres]'"
        ) from None
    try:
        with _notice_if_slow(shown):
            yield engine, shown
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if exc.statement is not None:
            raise  # not a failure to connect
        reason = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
        hint = (
            ""
            if timeout
            else f" (gave up after {DEFAULT_CONNECT_TIMEOUT} s; "
            "add connect_timeout=SECONDS to the URL to wait longer)"
        )
        raise StoreUnavailableError(
            f"cannot connect to the store {shown} (host {parsed.host or 'localhost'}): "
            f"{reason}{hint}"
        ) from None
    except BaseException:
        engine.dispose()
        raise


def _sqlite_path(parsed: sa.URL, shown: str, *, create: bool, must_exist: bool) -> Path | None:
    """The SQLite file of ``parsed`` (its directory made when creating), or ``None`` when
    it is missing and need not exist."""
    if not parsed.database:
        raise ConfigurationError(
            f"store URL {shown!r} names no file: use sqlite:///path/to/batchor.db (three "
            "slashes, then the path), or memory:// for a store that lives in this process only"
        )
    path = Path(parsed.database).expanduser()
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"store {shown}: cannot create the directory {path.parent}: {exc.strerror or exc}"
            ) from None
        if path.is_dir():
            raise ConfigurationError(f"store {shown}: {path} is a directory, not a file")
        return path
    if path.is_file():
        return path
    if path.exists():
        raise ConfigurationError(f"store {shown}: {path} is not a file")
    if must_exist:
        raise ConfigurationError(
            f"no store at {shown}: {path} does not exist (this command only reads a store; "
            f"{_CREATED_BY})"
        )
    return None


def _check_current(engine: sa.Engine, shown: str) -> None:
    """Refuse a store without batchor's tables, or with an older schema (read-only use)."""
    revision = current_revision(engine)
    if revision is None:
        raise ConfigurationError(
            f"no store at {shown}: the database holds no batchor tables (this command only "
            f"reads a store; {_CREATED_BY})"
        )
    if revision.isdigit() and revision < HEAD_REVISION:
        raise ConfigurationError(
            f"store {shown} is at schema revision {revision}, older than this batchor's "
            f"{HEAD_REVISION}: run `batchor db upgrade` first"
        )


@contextmanager
def _notice_if_slow(shown: str) -> Iterator[None]:
    """Log a warning (the CLI prints it on stderr) if the block is still connecting after
    `SLOW_CONNECT_NOTICE` seconds, so a silent server is not mistaken for a hang."""
    timer = threading.Timer(
        SLOW_CONNECT_NOTICE, log.warning, ("connecting to the store %s ...", shown)
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
