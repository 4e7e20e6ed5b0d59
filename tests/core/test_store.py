"""The SQL store: migrated on open, the migrations match the tables, URLs are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from batchor import ConfigurationError
from batchor.stores.migrate import VERSION_TABLE, current_revision, head_revision
from batchor.stores.open import open_store
from batchor.stores.schema import metadata


def test_a_new_sqlite_store_is_migrated_to_head(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/deep/dir/b.db")
    assert (tmp_path / "deep/dir/b.db").is_file()
    assert current_revision(store.engine) == head_revision()
    store.close()


def test_migrations_produce_exactly_the_declared_tables(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/b.db")
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(ctx, metadata) == []
    store.close()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/b.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_reopening_keeps_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    store = open_store(url)
    store.create_run("r1", {"endpoint": "/v1/responses"}, "fp")
    store.close()
    again = open_store(url)
    record = again.get_run("r1")
    assert record is not None
    assert record.config == {"endpoint": "/v1/responses"}
    again.close()


def test_memory_store() -> None:
    store = open_store("memory://")
    record, created = store.create_run("r1", {}, "fp")
    assert created
    assert store.create_run("r1", {}, "fp")[1] is False
    assert store.get_run("r1") == record


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not valid"),
        ("mysql://localhost/db", "not supported"),
    ],
)
def test_bad_store_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_store(url)


def test_store_never_scans_items_per_lookup(tmp_path: Path) -> None:
    """Every per-item query the engine runs is served by an index."""
    store = open_store(f"sqlite:///{tmp_path}/b.db")
    queries = [
        "SELECT seq FROM batchor_items WHERE run_pk=1 AND status='pending' AND seq>0 "
        "ORDER BY seq LIMIT 10",
        "SELECT seq FROM batchor_items WHERE run_pk=1 AND seq IN (1,2) AND status='submitted'",
        "UPDATE batchor_items SET status='pending' WHERE batch_pk=1 AND status='submitted'",
        "SELECT item_id FROM batchor_items WHERE run_pk=1 AND item_id IN ('a')",
    ]
    with store.engine.connect() as conn:
        for query in queries:
            plan = " ".join(
                str(row[-1]) for row in conn.execute(sa.text("EXPLAIN QUERY PLAN " + query))
            )
            assert "SCAN" not in plan, (query, plan)
    store.close()
