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


def test_dropping_the_items_key_to_their_run_keeps_every_item(store_url: str) -> None:
    # 0009 drops the items' foreign key to the run (SQLite copies the table to do it): a
    # store upgraded from 0008 holds the same items, and deleting a run still takes them.
    from batchor.errors import DuplicateItemError
    from batchor.stores.base import ItemOutcome, NewItem
    from batchor.stores.migrate import downgrade, upgrade

    store = open_store(store_url)
    try:
        downgrade(store.engine, "0008")
        record, _ = store.create_run("old", CONFIG, "fp")
        other, _ = store.create_run("other", CONFIG, "fp")
        new = [NewItem(s, f"i{s}", 0, s * 10, 10, "h", 5, '{"m": 1}') for s in range(1, 6)]
        for run_pk in (record.pk, other.pk):
            assert store.add_items(
                run_pk, new, next_slice=1, ingested_count=5, checkpoint=None, complete=False
            )
        batch = store.record_batch(record.pk, "old/000001", "in.jsonl", [1, 2, 3], 1)
        assert batch is not None
        assert store.mark_submitted(batch.pk, "b1", "in_progress")
        lines = [
            ItemOutcome(1, "completed", "one", None, None, False, 3, 2),
            ItemOutcome(2, "failed", None, "invalid", "no", False),
        ]
        assert store.apply_outcomes(record.pk, batch.pk, lines, max_attempts=3) == 2
        before = store.item_rows(record.pk, 0, 10)
        assert sa.inspect(store.engine).get_foreign_keys("batchor_items") != []
        upgrade(store.engine)
        assert store_revision(store_url) == "0009"
        assert sa.inspect(store.engine).get_foreign_keys("batchor_items") == []
        if store_url.startswith("sqlite"):  # copied: still clustered, its indexes still partial
            with store.engine.connect() as conn:
                ddl = dict(
                    conn.exec_driver_sql(
                        "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'batchor_items'"
                    ).all()
                )
            assert "WITHOUT ROWID" in ddl["batchor_items"]
            assert ddl["ix_batchor_items_pending"].endswith("WHERE status = 'pending'")
            assert ddl["ix_batchor_items_batch"].endswith("WHERE batch_pk IS NOT NULL")
            assert ddl["ix_batchor_items_done"].endswith("WHERE done_tick IS NOT NULL")
        assert store.item_rows(record.pk, 0, 10) == before
        assert [r.status.value for r in before] == [
            "completed",
            "failed",
            "submitted",
            "pending",
            "pending",
        ]
        store.delete_run(record.pk)
        with store.engine.connect() as conn:
            left = conn.execute(sa.text("SELECT DISTINCT run_pk FROM batchor_items")).all()
        assert left == [(other.pk,)]
        with pytest.raises(DuplicateItemError):  # the run's item ids are still unique
            store.add_items(
                other.pk, new[:1], next_slice=2, ingested_count=6, checkpoint=None, complete=True
            )
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
