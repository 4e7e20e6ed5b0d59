"""The store's rarer paths (schema revisions, opening, escaped text; stores/open.py,
migrate.py, values.py), on a real SQLite file and on the real Postgres server. Every
transition of the port, and its races, is in the contract suite (tests/stores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor import ConfigurationError
from batchor.stores.open import open_store, store_revision

CONFIG = {"endpoint": "/v1/responses", "model": "m", "max_attempts": 3}


# ---- schema revisions -------------------------------------------------------------------


def test_the_schema_can_be_taken_down_to_nothing_and_up_again(store_url: str) -> None:
    from batchor.stores.migrate import HEAD_REVISION, downgrade, upgrade

    store = open_store(store_url)
    try:
        downgrade(store.engine, "base")
        assert store_revision(store_url) is None
        names = set(sa.inspect(store.engine).get_table_names())
        assert {n for n in names if n.startswith("batchor_")} <= {"batchor_alembic_version"}
        upgrade(store.engine)
        assert store_revision(store_url) == HEAD_REVISION
        record, created = store.create_run("after", CONFIG, "fp")
        assert created
        assert record.status.value == "running"
    finally:
        store.close()


# ---- opening ----------------------------------------------------------------------------


def test_an_in_memory_store_has_no_revision() -> None:
    assert store_revision("memory://") is None


def test_a_missing_postgres_driver_is_named_with_the_extra_to_install() -> None:
    with pytest.raises(ConfigurationError, match=r"needs the \w+ driver: pip install"):
        open_store("postgresql+pg8000://user:secret@127.0.0.1:9/db")


def test_a_store_locked_by_another_process_is_not_taken_for_a_bad_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/locked.db"
    holder = sa.create_engine(url)  # a rollback-journal database: a lock blocks readers too
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE other (x INTEGER)")
            conn.commit()
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            # Reading it while another process writes: raised as it is (the caller retries),
            # not as a bad URL or a file that is not a database.
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                open_store(url + "?timeout=0.05", create=False)
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                store_revision(url + "?timeout=0.05")
            conn.exec_driver_sql("ROLLBACK")
    finally:
        holder.dispose()
    with pytest.raises(ConfigurationError, match="holds no batchor tables"):
        open_store(url, create=False)  # once free: read, and refused for what it is


def test_a_failing_statement_on_postgres_is_not_taken_for_a_failed_connection(
    pg_url: str,
) -> None:
    from batchor import StoreUnavailableError

    open_store(pg_url).close()
    holder = sa.create_engine(pg_url)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("LOCK TABLE batchor_alembic_version IN ACCESS EXCLUSIVE MODE")
            # Reading the revision waits on the lock and gives up: a failed statement, raised
            # as it is, not "cannot connect to the store".
            with pytest.raises(sa.exc.OperationalError, match="lock timeout") as raised:
                open_store(pg_url + "%20-clock_timeout%3D100", create=False)
            assert not isinstance(raised.value, StoreUnavailableError)
            assert raised.value.statement is not None
            conn.rollback()
    finally:
        holder.dispose()


# ---- escaped text -----------------------------------------------------------------------


def test_a_marked_value_that_is_not_an_escaped_string_comes_back_as_it_is() -> None:
    from batchor.stores.values import MARK, escape, unescape

    for stored in (MARK + "[1, 2]", MARK + "7", MARK + "null", MARK + "{not json"):
        assert unescape(stored) == stored
    assert unescape(escape("a\x00b")) == "a\x00b"


def test_text_sent_in_binary_format_to_postgres_is_escaped_and_restored(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for value in ("plain", "nul \x00 inside", "lone \udc80 surrogate"):
                # %b: psycopg sends the parameter in binary format, through the binary dumper.
                cursor.execute("SELECT %b::text", [value])
                assert cursor.fetchone() == (value,)
            cursor.close()
        finally:
            raw.close()
    finally:
        store.close()
