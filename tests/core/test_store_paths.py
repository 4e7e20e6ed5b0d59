"""The store's compare-and-set refusals and rarer paths (stores/sql.py, open.py), on a real
SQLite file and on the real Postgres server: each call that loses a race changes nothing
and says so, and the state it leaves is read back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor import ConfigurationError
from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import BatchRecord, NewItem
from batchor.stores.open import open_store, store_revision
from batchor.stores.sql import SqlStateStore

CONFIG = {"endpoint": "/v1/responses", "model": "m", "max_attempts": 3}


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStateStore]:
    s = open_store(store_url)
    yield s
    s.close()


def _item(seq: int, item_id: str | None = None, tokens: int = 10) -> NewItem:
    return NewItem(seq, item_id or f"item-{seq}", 0, seq * 10, 10, "h", tokens, None)


def _run(store: SqlStateStore, n: int = 4, run_id: str = "r", *, complete: bool = True) -> int:
    record, created = store.create_run(run_id, CONFIG, "fp")
    assert created
    assert store.add_items(
        record.pk,
        [_item(i) for i in range(1, n + 1)],
        next_slice=1,
        ingested_count=n,
        checkpoint=None,
        complete=complete,
    )
    return record.pk


def _batch(
    store: SqlStateStore, run_pk: int, seqs: list[int], scope: str | None = None
) -> BatchRecord:
    number = store.allocate_batch_number(run_pk)
    record = store.record_batch(
        run_pk,
        f"r/{number:06d}",
        f"runs/r/batches/{number:06d}/input.jsonl",
        seqs,
        100,
        est_tokens=10 * len(seqs),
        quota_scope=scope,
    )
    assert record is not None
    return record


def _statuses(store: SqlStateStore, run_pk: int) -> dict[ItemStatus, int]:
    return {s: n for s, n in store.item_counts(run_pk).items() if n}


# ---- ingestion --------------------------------------------------------------------------


def test_a_slice_recorded_twice_is_refused_the_second_time(store: SqlStateStore) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    slice_args = {"next_slice": 1, "ingested_count": 2, "checkpoint": "2", "complete": False}
    assert store.add_items(record.pk, [_item(1), _item(2)], **slice_args)  # type: ignore[arg-type]
    # Another worker recording the same slice from the same starting point loses.
    assert not store.add_items(record.pk, [_item(1), _item(2)], **slice_args)  # type: ignore[arg-type]
    after = store.get_run("r")
    assert after is not None
    assert after.ingested_count == 2
    assert after.source_checkpoint == "2"
    assert not after.ingest_complete
    assert _statuses(store, record.pk) == {ItemStatus.PENDING: 2}


def test_a_duplicate_within_one_slice_is_refused_and_nothing_is_recorded(
    store: SqlStateStore,
) -> None:
    from batchor import DuplicateItemError

    record, _ = store.create_run("r", CONFIG, "fp")
    with pytest.raises(DuplicateItemError, match="duplicate item_id in the source"):
        store.add_items(
            record.pk,
            [_item(1, "same"), _item(2, "same")],
            next_slice=1,
            ingested_count=2,
            checkpoint=None,
            complete=True,
        )
    after = store.get_run("r")
    assert after is not None
    assert after.ingested_count == 0
    assert _statuses(store, record.pk) == {}


def test_a_duplicate_of_an_earlier_slice_is_named_whichever_chunk_it_is_in(
    store: SqlStateStore,
) -> None:
    from batchor import DuplicateItemError

    pk = _run(store, n=1, complete=False)  # item-1
    fresh = [_item(i, f"new-{i}") for i in range(2, 1200)]  # more than one IN (...) chunk
    with pytest.raises(DuplicateItemError, match="duplicate item_id 'item-1'") as raised:
        store.add_items(
            pk,
            [*fresh, _item(1200, "item-1")],
            next_slice=2,
            ingested_count=1200,
            checkpoint=None,
            complete=True,
        )
    assert raised.value.item_id == "item-1"
    assert _statuses(store, pk) == {ItemStatus.PENDING: 1}


# ---- packing and submission -------------------------------------------------------------


def test_items_another_worker_packed_are_not_packed_again(store: SqlStateStore) -> None:
    pk = _run(store)
    first = _batch(store, pk, [1, 2])
    # A second worker packing from an older view of the pending items.
    assert store.record_batch(pk, "r/000009", "x", [2, 3], 100) is None
    assert [b.pk for b in store.batches(pk, list(BatchStatus))] == [first.pk]
    rows = store.item_rows(pk, 0, 10)
    assert [r.status for r in rows] == [
        ItemStatus.QUEUED,
        ItemStatus.QUEUED,
        ItemStatus.PENDING,  # rolled back with the losing batch
        ItemStatus.PENDING,
    ]


def test_tokens_are_reserved_once_per_batch_and_only_while_they_fit(
    store: SqlStateStore,
) -> None:
    pk = _run(store, n=6)
    a = _batch(store, pk, [1, 2], scope="m|")  # 20 tokens
    b = _batch(store, pk, [3, 4, 5], scope="m|")  # 30 tokens
    assert store.reserve_tokens(a.pk, limit=45)
    assert store.reserve_tokens(a.pk, limit=45)  # already holds its reservation: no recount
    assert not store.reserve_tokens(b.pk, limit=45)  # 20 + 30 > 45
    reserved = store.get_batch(b.pk)
    assert reserved is not None
    assert not reserved.reserved  # the refusal rolled its mark back
    assert store.reserve_tokens(b.pk, limit=50)  # exactly at the limit fits
    # Dropping a never-sent batch releases its reservation.
    assert store.drop_batch(a.pk, BatchStatus.PREPARED, None)
    c = _batch(store, pk, [6], scope="m|")
    assert store.reserve_tokens(c.pk, limit=40)  # 30 + 10


def test_a_batch_is_marked_submitted_once(store: SqlStateStore) -> None:
    pk = _run(store)
    batch = _batch(store, pk, [1, 2])
    assert store.mark_submitted(batch.pk, "batch_1", "validating")
    assert not store.mark_submitted(batch.pk, "batch_2", "validating")
    after = store.get_batch(batch.pk)
    assert after is not None
    assert after.status is BatchStatus.SUBMITTED
    assert after.provider_batch_id == "batch_1"
    assert _statuses(store, pk) == {ItemStatus.SUBMITTED: 2, ItemStatus.PENDING: 2}


def test_a_batch_whose_create_claim_changed_is_not_dropped(store: SqlStateStore) -> None:
    pk = _run(store)
    batch = _batch(store, pk, [1, 2])
    assert store.update_batch(batch.pk, BatchStatus.PREPARED, create_started_at=100.0)
    assert not store.drop_batch(batch.pk, BatchStatus.PREPARED, None)
    assert not store.drop_batch(batch.pk, BatchStatus.PREPARED, 99.0)
    assert not store.drop_batch(batch.pk, BatchStatus.UPLOADED, 100.0)
    assert _statuses(store, pk) == {ItemStatus.QUEUED: 2, ItemStatus.PENDING: 2}
    assert store.drop_batch(batch.pk, BatchStatus.PREPARED, 100.0)
    after = store.get_batch(batch.pk)
    assert after is not None
    assert after.status is BatchStatus.COLLECTED
    assert after.provider_status == "not_sent"
    assert _statuses(store, pk) == {ItemStatus.CANCELLED: 2, ItemStatus.PENDING: 2}


def test_cancelling_one_batch_cancels_only_its_queued_items(store: SqlStateStore) -> None:
    pk = _run(store, n=6)
    a = _batch(store, pk, [1, 2])
    _batch(store, pk, [3, 4])
    assert store.cancel_items(pk, a.pk) == 2
    assert store.cancel_items(pk, a.pk) == 0
    assert _statuses(store, pk) == {
        ItemStatus.CANCELLED: 2,
        ItemStatus.QUEUED: 2,
        ItemStatus.PENDING: 2,
    }
    assert store.cancel_items(pk) == 4  # the run's: pending and queued alike
    assert _statuses(store, pk) == {ItemStatus.CANCELLED: 6}


# ---- collection -------------------------------------------------------------------------


def _ended(store: SqlStateStore, pk: int, seqs: list[int]) -> BatchRecord:
    batch = _batch(store, pk, seqs)
    assert store.mark_submitted(batch.pk, f"batch_{batch.pk}", "validating")
    assert store.update_batch(batch.pk, BatchStatus.SUBMITTED, status=BatchStatus.ENDED)
    return batch


def test_a_batch_is_finished_once_and_its_tokens_counted_once(store: SqlStateStore) -> None:
    pk = _run(store)
    batch = _ended(store, pk, [1, 2])
    assert store.finish_batch(pk, batch.pk, 100, 7)
    assert not store.finish_batch(pk, batch.pk, 100, 7)  # another worker finished it
    run = store.get_run("r")
    assert run is not None
    assert (run.input_tokens, run.output_tokens) == (100, 7)
    after = store.get_batch(batch.pk)
    assert after is not None
    assert after.status is BatchStatus.COLLECTED
    # A batch not yet ended is not finished either.
    live = _batch(store, pk, [3])
    assert not store.finish_batch(pk, live.pk, 5, 5)


def test_requeueing_with_a_charge_records_the_failure_and_fails_the_last_attempt(
    store: SqlStateStore,
) -> None:
    pk = _run(store, n=2)
    first = _ended(store, pk, [1, 2])
    moved = store.requeue_unanswered(
        pk, first.pk, charge=("missing_output", "no line for it"), max_attempts=2
    )
    assert moved == 2
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts) for r in rows] == [(ItemStatus.PENDING, 1)] * 2
    assert {(r.error_class, r.error_message, r.error_retryable) for r in rows} == {
        ("missing_output", "no line for it", True)
    }
    second = _ended(store, pk, [1, 2])
    assert (
        store.requeue_unanswered(
            pk, second.pk, charge=("batch_failed", "the batch failed"), max_attempts=2
        )
        == 2
    )
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts) for r in rows] == [(ItemStatus.FAILED, 2)] * 2
    assert {(r.error_class, r.error_message, r.error_attempt) for r in rows} == {
        ("batch_failed", "the batch failed", 2)
    }
    # Nothing left submitted in either batch: a second requeue moves nothing.
    assert store.requeue_unanswered(pk, second.pk, charge=("x", "y"), max_attempts=2) == 0
    assert store.requeue_unanswered(pk, second.pk, charge=None, max_attempts=2) == 0


def test_requeueing_without_a_charge_leaves_the_attempts(store: SqlStateStore) -> None:
    pk = _run(store, n=2)
    batch = _ended(store, pk, [1, 2])
    assert store.requeue_unanswered(pk, batch.pk, charge=None, max_attempts=1) == 2
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts, r.error_class) for r in rows] == [
        (ItemStatus.PENDING, 0, None)
    ] * 2


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
