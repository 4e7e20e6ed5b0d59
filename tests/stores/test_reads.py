"""Reading: counts, rows by seq and by the order items ended, and every terminal row
streamed for exports - the same rows whichever way they are read."""

from __future__ import annotations

from batchor.states import ItemStatus
from batchor.stores.base import ItemOutcome, NewItem
from batchor.stores.sql import SqlStateStore

from .helpers import CONFIG, done, make_run, submitted


def test_counts_cover_every_status(store: SqlStateStore) -> None:
    pk = make_run(store, n=3)
    counts = store.item_counts(pk)
    assert set(counts) == set(ItemStatus)
    assert counts[ItemStatus.PENDING] == 3
    assert sum(counts.values()) == 3
    assert store.batch_counts(pk) == {}


def test_rows_read_by_seq_and_by_status(store: SqlStateStore) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    meta = NewItem(1, "with-meta", 0, 0, 5, "h", None, '{"k":"v"}')
    plain = NewItem(2, "plain", 0, 5, 5, "h", None, None)
    store.add_items(
        record.pk, [meta, plain], next_slice=1, ingested_count=2, checkpoint=None, complete=True
    )
    batch = submitted(store, record.pk, [1])
    store.apply_outcomes(record.pk, batch.pk, [done(1, "answer")], max_attempts=3)
    rows = store.item_rows(record.pk, 0, 10)
    assert [(r.seq, r.item_id, r.metadata) for r in rows] == [
        (1, "with-meta", '{"k":"v"}'),
        (2, "plain", None),
    ]
    assert (rows[0].status, rows[0].output_text, rows[0].error_retryable) == (
        ItemStatus.COMPLETED,
        "answer",
        None,
    )
    pending = store.item_rows(record.pk, 0, 10, statuses=[ItemStatus.PENDING])
    assert [r.seq for r in pending] == [2]
    assert store.item_rows(record.pk, 1, 10) == rows[1:]
    assert store.item_rows(record.pk, 0, 1) == rows[:1]


def test_terminal_rows_come_in_the_order_they_ended(store: SqlStateStore) -> None:
    pk = make_run(store, n=4)
    first = submitted(store, pk, [3, 4])
    store.apply_outcomes(pk, first.pk, [done(4)], max_attempts=3)  # ends first
    second = submitted(store, pk, [1, 2])
    failed = ItemOutcome(1, "failed", error_class="e", message="m")
    store.apply_outcomes(pk, second.pk, [failed, done(2)], max_attempts=3)
    store.apply_outcomes(pk, first.pk, [done(3)], max_attempts=3)  # ends last
    ended = store.terminal_rows(pk, (0, 0), 10)
    assert [r.seq for r in ended] == [4, 1, 2, 3]
    ticks = [r.done_tick or 0 for r in ended]
    assert ticks == sorted(ticks)
    after_second = store.terminal_rows(pk, (ticks[1], ended[1].seq), 10)
    assert [r.seq for r in after_second] == [2, 3]
    assert [r.seq for r in store.terminal_rows(pk, (ticks[0], 4), 1)] == [1]
    assert ended[1].error_retryable is False
    # Exports: every terminal row in seq order, in pages, the same rows.
    pages = list(store.stream_terminal_rows(pk, 3))
    assert [len(p) for p in pages] == [3, 1]
    assert [r for p in pages for r in p] == sorted(ended, key=lambda r: r.seq)
    assert list(store.stream_terminal_rows(pk + 1000, 3)) == []
