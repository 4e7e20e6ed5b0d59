"""Ingestion and packing: a slice is recorded once, with its position; duplicates are named;
pending items are read in seq order; a packed batch takes its items all or nothing; items
that can never be sent fail with their attempt recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchor import DuplicateItemError
from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import NewItem, PendingItem
from batchor.stores.open import open_store
from batchor.stores.schema import item_failures
from batchor.stores.sql import SqlStateStore

from .helpers import CONFIG, item_states, make_batch, make_run, new_item, race, statuses


def test_a_slice_recorded_twice_is_refused_the_second_time(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    won = race(
        [store, rival],
        lambda s, i: s.add_items(
            record.pk,
            [new_item(1), new_item(2)],
            next_slice=1,
            ingested_count=2,
            checkpoint="2",
            complete=False,
        ),
    )
    assert sorted(won) == [False, True]
    after = store.get_run("r")
    assert after is not None
    assert (after.ingested_count, after.source_checkpoint, after.ingest_complete) == (
        2,
        "2",
        False,
    )
    assert statuses(store, record.pk) == {ItemStatus.PENDING: 2}


def test_every_field_of_a_new_item_is_stored_as_given(store: SqlStateStore) -> None:
    ids = ["é", "😀", '"quoted"', "back\\slash", "tab\t", " lead", "\\u0000 as text", "x" * 5000]
    if store.engine.dialect.name != "postgresql":  # Postgres text holds no NUL
        ids.append("nul\x00inside")
    record, _ = store.create_run("r", CONFIG, "fp")
    given = [
        NewItem(seq, item_id, seq % 3, 2**40 + seq, 480, f"{seq:08x}", seq * 7 or None, meta)
        for seq, (item_id, meta) in enumerate(
            zip(ids, ['{"row":1}', None] * len(ids), strict=False), start=1
        )
    ]
    assert store.add_items(
        record.pk, given, next_slice=3, ingested_count=len(given), checkpoint="c", complete=True
    )
    rows = {row.seq: row for row in store.item_rows(record.pk, 0, 100)}
    assert [rows[it.seq].item_id for it in given] == ids
    assert [rows[it.seq].metadata for it in given] == [it.metadata for it in given]
    assert [
        (p.seq, p.req_slice, p.req_offset, p.req_length, p.est_tokens)
        for p in store.pending_items(record.pk, 0, 100)
    ] == [(it.seq, it.req_slice, it.req_offset, it.req_length, it.est_tokens) for it in given]


def test_an_sqlite_driver_without_json_functions_stores_slices_row_by_row(
    tmp_path: Path,
) -> None:
    # Whether a slice goes in as one JSON array is decided by the SQLite the engine's own
    # driver links (pysqlite3 or sqlcipher may be older than the standard module's), not by
    # the standard sqlite3 module's.
    store = open_store(f"sqlite:///{tmp_path}/old.db")
    try:
        store.engine.dialect.server_version_info = (3, 37, 2)

        def missing(*args: Any) -> Any:
            raise RuntimeError("this SQLite has no JSON functions")

        @sa.event.listens_for(store.engine, "connect")
        def without_json(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.create_function("json_extract", 2, missing)

        store.engine.dispose()  # connections from now on have the failing json_extract
        record, _ = store.create_run("r", CONFIG, "fp")
        given = [new_item(seq) for seq in range(1, 2_001)]
        assert store.add_items(
            record.pk, given, next_slice=1, ingested_count=2_000, checkpoint="c", complete=True
        )
        pending = store.pending_items(record.pk, 0, 5_000)
        assert [(p.seq, p.req_offset) for p in pending] == [(it.seq, it.req_offset) for it in given]
    finally:
        store.close()


def test_a_complete_run_takes_no_more_items(store: SqlStateStore) -> None:
    pk = make_run(store, n=2, complete=True)
    assert not store.add_items(
        pk, [new_item(3)], next_slice=2, ingested_count=3, checkpoint=None, complete=True
    )
    assert statuses(store, pk) == {ItemStatus.PENDING: 2}


def test_an_empty_last_slice_completes_the_run(store: SqlStateStore) -> None:
    pk = make_run(store, n=2, complete=False)
    assert store.add_items(pk, [], next_slice=1, ingested_count=2, checkpoint="2", complete=True)
    after = store.get_run("r")
    assert after is not None
    assert after.ingest_complete


def test_a_duplicate_within_one_slice_is_refused_and_nothing_is_recorded(
    store: SqlStateStore,
) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    with pytest.raises(DuplicateItemError, match="duplicate item_id in the source"):
        store.add_items(
            record.pk,
            [new_item(1, "same"), new_item(2, "same")],
            next_slice=1,
            ingested_count=2,
            checkpoint=None,
            complete=True,
        )
    after = store.get_run("r")
    assert after is not None
    assert after.ingested_count == 0
    assert statuses(store, record.pk) == {}


def test_a_duplicate_of_an_earlier_slice_is_named_whichever_chunk_it_is_in(
    store: SqlStateStore,
) -> None:
    pk = make_run(store, n=1, complete=False)  # item-1
    fresh = [new_item(i, f"new-{i}") for i in range(2, 1200)]  # more than one IN (...) chunk
    with pytest.raises(DuplicateItemError, match="duplicate item_id 'item-1'") as raised:
        store.add_items(
            pk,
            [*fresh, new_item(1200, "item-1")],
            next_slice=2,
            ingested_count=1200,
            checkpoint=None,
            complete=True,
        )
    assert raised.value.item_id == "item-1"
    assert statuses(store, pk) == {ItemStatus.PENDING: 1}


def test_pending_items_come_in_seq_order_after_a_position(store: SqlStateStore) -> None:
    pk = make_run(store, n=5)
    make_batch(store, pk, [2])
    assert store.pending_items(pk, 0, 2) == [
        PendingItem(1, 0, 0, 10, 10, 10),
        PendingItem(3, 0, 0, 30, 10, 10),
    ]
    assert [p.seq for p in store.pending_items(pk, 3, 10)] == [4, 5]
    assert store.pending_items(pk, 5, 10) == []


def test_batch_numbers_are_never_handed_out_twice(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    numbers = race(
        [store, rival, store, rival],
        lambda s, i: s.allocate_batch_number(record.pk),
    )
    assert sorted(numbers) == [0, 1, 2, 3]


def test_a_packed_batch_queues_its_items(store: SqlStateStore) -> None:
    pk = make_run(store, n=5)
    batch = make_batch(store, pk, [1, 2, 4], scope="m|")
    assert (batch.status, batch.request_count, batch.input_bytes, batch.est_tokens) == (
        BatchStatus.PREPARED,
        3,
        100,
        30,
    )
    assert (batch.file_id, batch.create_started_at, batch.provider_batch_id) == (None,) * 3
    assert (batch.errors, batch.reserved, batch.failures) == ((), False, 0)
    assert store.get_batch(batch.pk) == batch
    assert [s for s, _ in item_states(store, pk)] == [
        ItemStatus.QUEUED,
        ItemStatus.QUEUED,
        ItemStatus.PENDING,
        ItemStatus.QUEUED,
        ItemStatus.PENDING,
    ]


def test_of_two_workers_packing_the_same_items_one_records_a_batch(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store, n=4)
    made = race(
        [store, rival],
        lambda s, i: s.record_batch(pk, f"r/00000{i}", f"in-{i}", [1, 2, 3], 100),
    )
    winners = [b for b in made if b is not None]
    assert len(winners) == 1
    assert [b.pk for b in store.batches(pk, list(BatchStatus))] == [winners[0].pk]
    assert statuses(store, pk) == {ItemStatus.QUEUED: 3, ItemStatus.PENDING: 1}


def test_a_batch_overlapping_one_already_packed_is_rolled_back(store: SqlStateStore) -> None:
    pk = make_run(store)
    first = make_batch(store, pk, [1, 2])
    # A second worker packing from an older view of the pending items.
    assert store.record_batch(pk, "r/000009", "x", [2, 3], 100) is None
    assert [b.pk for b in store.batches(pk, list(BatchStatus))] == [first.pk]
    assert [s for s, _ in item_states(store, pk)] == [
        ItemStatus.QUEUED,
        ItemStatus.QUEUED,
        ItemStatus.PENDING,  # rolled back with the losing batch
        ItemStatus.PENDING,
    ]


def test_items_that_can_never_be_sent_fail_with_their_attempt_recorded(
    store: SqlStateStore,
) -> None:
    pk = make_run(store, n=3)
    make_batch(store, pk, [3])
    store.fail_pending(pk, [1, 3], "request_too_large", "over the limit")  # 3 is queued
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts) for r in rows] == [
        (ItemStatus.FAILED, 1),
        (ItemStatus.PENDING, 0),
        (ItemStatus.QUEUED, 0),
    ]
    assert (rows[0].error_class, rows[0].error_message, rows[0].error_retryable) == (
        "request_too_large",
        "over the limit",
        False,
    )
    assert rows[0].error_attempt == 1
    assert rows[0].done_tick
    with store.engine.connect() as conn:
        audit = conn.execute(
            sa.select(
                item_failures.c.seq,
                item_failures.c.attempt,
                item_failures.c.batch_pk,
                item_failures.c.retryable,
            )
        ).all()
    assert [tuple(r) for r in audit] == [(1, 1, None, False)]
