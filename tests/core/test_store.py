"""The SQL store: migrated on open, the migrations match the tables, URLs are checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from batchor import ConfigurationError, ItemStatus
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
        ("memory://extra", "takes no name or path; use memory://"),
        ("memory:extra", "takes no name or path; use memory://"),
        # Used to give an in-memory store, silently lost with the process.
        ("sqlite://", "names no file: use sqlite:///path/to/batchor.db .* or memory://"),
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


def test_a_store_written_by_the_previous_schema_opens_and_resumes(tmp_path: Path) -> None:
    from batchor import BatchRunner, ItemStatus
    from batchor.stores.migrate import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO batchor_runs (pk, run_id, status, config, fingerprint,"
                " ingest_complete, ingested_count, next_slice, next_batch, input_tokens,"
                " output_tokens, created_at, updated_at) VALUES (1, 'old', 'running',"
                " :config, 'fp', 1, 2, 1, 0, 0, 0, 0, 0)"
            ),
            {
                "config": '{"endpoint": "/v1/responses", "max_attempts": 3,'
                ' "max_requests": 50000, "max_bytes": 190000000, "model": "m", "schema": null}'
            },
        )
        for seq in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO batchor_items (run_pk, seq, item_id, status, attempts,"
                    " req_slice, req_offset, req_length, req_hash) VALUES"
                    " (1, :seq, :id, 'pending', 0, 0, 0, 1, 'h')"
                ),
                {"seq": seq, "id": f"i{seq}"},
            )
    engine.dispose()
    assert current_revision(sa.create_engine(url)) == "0001"
    with BatchRunner(url, tmp_path / "artifacts") as runner:
        summary = runner.get_run("old").summary()
    assert summary.items[ItemStatus.PENDING] == 2
    assert current_revision(sa.create_engine(url)) == head_revision() != "0001"


def test_a_migration_that_copies_a_table_keeps_the_rows_referencing_it(tmp_path: Path) -> None:
    from batchor.stores.base import NewItem
    from batchor.stores.migrate import downgrade, upgrade

    store = open_store(f"sqlite:///{tmp_path}/b.db")
    record, _ = store.create_run("r", {}, "fp")
    store.add_items(
        record.pk,
        [NewItem(1, "a", 0, 0, 1, "h", None)],
        next_slice=1,
        ingested_count=1,
        checkpoint=None,
        complete=True,
    )
    # 0002's downgrade rebuilds batchor_runs by copying it (SQLite's way to drop a column);
    # with foreign keys on, dropping the old copy would cascade into batchor_items.
    downgrade(store.engine, "0001")
    upgrade(store.engine)
    assert store.item_counts(record.pk)[ItemStatus.PENDING] == 1
    store.close()


def test_the_known_head_revision_is_alembics_newest() -> None:
    # Opening an up-to-date store skips Alembic by comparing against this constant.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from batchor.stores import migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate._SCRIPTS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == migrate.HEAD_REVISION


def test_opening_without_create_needs_an_existing_current_store(store_url: str) -> None:
    """Read-only users open a store with create=False: a missing or empty store is an
    error naming the URL, and nothing is created or migrated."""
    from batchor.stores.migrate import upgrade

    shown = sa.make_url(store_url).render_as_string(hide_password=True)
    with pytest.raises(ConfigurationError, match="no store at") as caught:
        open_store(store_url, create=False)
    assert shown in str(caught.value)
    if store_url.startswith("sqlite"):
        assert not Path(sa.make_url(store_url).database or "").parent.exists()
        Path(sa.make_url(store_url).database or "").parent.mkdir()
    engine = sa.create_engine(store_url)
    assert current_revision(engine) is None  # nothing created
    upgrade(engine, "0004")
    with pytest.raises(ConfigurationError, match=r"revision 0004.*batchor db upgrade"):
        open_store(store_url, create=False)
    assert current_revision(engine) == "0004"  # not migrated
    engine.dispose()
    open_store(store_url).close()  # writers migrate
    store = open_store(store_url, create=False)
    assert store.list_runs() == []
    store.close()


def test_the_memory_store_cannot_be_opened_for_reading() -> None:
    with pytest.raises(ConfigurationError, match="lives only in the process"):
        open_store("memory://", create=False)
    assert open_store("sqlite:///:memory:").list_runs() == []


def test_a_truncated_sqlite_store_is_reported_not_recreated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    store = open_store(url)
    store.create_run("r1", {}, "fp")
    store.close()
    for name in ("b.db", "b.db-wal", "b.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).write_bytes(b"")
    with pytest.raises(ConfigurationError, match="holds no batchor tables"):
        open_store(url, create=False)
    assert (tmp_path / "b.db").stat().st_size == 0


def test_a_garbage_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "g.db").write_bytes(b"not a database, not at all" * 100)
    for create in (True, False):
        with pytest.raises(ConfigurationError, match=re.escape(f"{tmp_path}/g.db is not a SQLite")):
            open_store(f"sqlite:///{tmp_path}/g.db", create=create)


def test_an_unopenable_sqlite_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigurationError, match=re.escape(f"{tmp_path}/d is a directory")):
        open_store(f"sqlite:///{tmp_path}/d")
    with pytest.raises(ConfigurationError, match=r"cannot open /proc/x\.db"):
        open_store("sqlite:////proc/x.db")
