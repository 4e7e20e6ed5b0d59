"""Completions: on Postgres a batch's answer is appended to batchor_completions and the item's
own row is left queued in its batch (on SQLite the row takes it in place). Every reader shows
the item completed, and nothing that moves or ends waiting items (requeue, deadline,
take-over, cancel) touches it again, on every backend."""

from __future__ import annotations

import sqlalchemy as sa

from batchor.states import ItemStatus
from batchor.stores.base import ItemOutcome
from batchor.stores.open import open_store
from batchor.stores.schema import completions, items
from batchor.stores.sql import SqlStateStore

from .helpers import done, ended, make_run, statuses, submitted


def _raw(store: SqlStateStore, run_pk: int) -> tuple[list[tuple[int, str]], list[int]]:
    """The items' own row statuses, and the seqs with a completion."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(items.c.seq, items.c.status)
            .where(items.c.run_pk == run_pk)
            .order_by(items.c.seq)
        ).all()
        seqs = conn.execute(
            sa.select(completions.c.seq)
            .where(completions.c.run_pk == run_pk)
            .order_by(completions.c.seq)
        ).scalars()
        return [(r.seq, r.status) for r in rows], list(seqs)


def test_a_completion_is_appended_and_read_as_the_item(store: SqlStateStore) -> None:
    pk = make_run(store, n=3)
    first = ended(store, pk, [1, 2])
    retry = ItemOutcome(1, "retry", None, "server_error", "500", True, 4, 0)
    assert store.apply_outcomes(pk, first.pk, [retry, done(2, "two")], max_attempts=3) == 2
    store.requeue_unanswered(pk, first.pk, charge=None, max_attempts=3)
    second = ended(store, pk, [1])
    assert store.apply_outcomes(pk, second.pk, [done(1, "one")], max_attempts=3) == 1
    if store.engine.dialect.name == "postgresql":
        # The rows were not rewritten: both still say queued, in the batch that answered them.
        assert _raw(store, pk) == ([(1, "queued"), (2, "queued"), (3, "pending")], [1, 2])
    else:
        assert _raw(store, pk) == ([(1, "completed"), (2, "completed"), (3, "pending")], [])
    rows = store.item_rows(pk, 0, 10)
    one, two = rows[0], rows[1]
    assert (one.status, one.attempts, one.output_text) == (ItemStatus.COMPLETED, 2, "one")
    # The retry's error is gone from the item (kept in its failures), as before.
    assert (one.error_class, one.error_message, one.error_retryable, one.error_attempt) == (
        None,
        None,
        None,
        None,
    )
    assert (one.input_tokens, one.output_tokens) == (3, 2)
    assert (two.status, two.attempts, two.output_text) == (ItemStatus.COMPLETED, 1, "two")
    assert rows[2].status is ItemStatus.PENDING
    assert one.done_tick is not None
    assert two.done_tick is not None
    assert two.done_tick < one.done_tick
    assert statuses(store, pk) == {ItemStatus.COMPLETED: 2, ItemStatus.PENDING: 1}
    assert [r.seq for r in store.item_rows(pk, 0, 10, [ItemStatus.COMPLETED])] == [1, 2]
    assert [r.seq for r in store.item_rows(pk, 0, 10, [ItemStatus.QUEUED])] == []
    assert [r.seq for r in store.terminal_rows(pk, (0, 0), 10)] == [2, 1]
    streamed = [r for page in store.stream_terminal_rows(pk, 1) for r in page]
    assert streamed == store.item_rows(pk, 0, 2)


def test_counts_take_completions_from_their_batch(store: SqlStateStore) -> None:
    pk = make_run(store, n=6)
    a = ended(store, pk, [1, 2, 3])
    b = submitted(store, pk, [4, 5])
    assert store.apply_outcomes(pk, a.pk, [done(1), done(3)], max_attempts=3) == 2
    assert statuses(store, pk) == {
        ItemStatus.COMPLETED: 2,
        ItemStatus.SUBMITTED: 3,  # 2 of a, 4 and 5 of b
        ItemStatus.PENDING: 1,
    }
    assert store.item_rows(pk, 0, 10)[1].status is ItemStatus.SUBMITTED
    assert b.pk != a.pk


def test_nothing_that_moves_waiting_items_moves_a_completed_one(store: SqlStateStore) -> None:
    pk = make_run(store, n=4)
    a = ended(store, pk, [1, 2])
    b = ended(store, pk, [3, 4])
    assert store.apply_outcomes(pk, a.pk, [done(1)], max_attempts=3) == 1
    assert store.apply_outcomes(pk, b.pk, [done(3)], max_attempts=3) == 1
    assert store.fail_open(pk, "past the deadline", batch_pk=a.pk) == 1  # item 2 only
    assert store.take_over_stopped(pk, b.pk) == 1  # item 4 only
    assert store.requeue_unanswered(pk, a.pk, charge=None, max_attempts=3) == 0
    assert store.finish_batch(pk, a.pk, 0, 0)
    assert store.cancel_items(pk) == 1  # item 4, pending again; not item 1 in a collected batch
    states = [(r.seq, r.status) for r in store.item_rows(pk, 0, 10)]
    assert states == [
        (1, ItemStatus.COMPLETED),
        (2, ItemStatus.FAILED),
        (3, ItemStatus.COMPLETED),
        (4, ItemStatus.CANCELLED),
    ]
    assert statuses(store, pk) == {  # 1's batch is collected, 3's still ended
        ItemStatus.COMPLETED: 2,
        ItemStatus.FAILED: 1,
        ItemStatus.CANCELLED: 1,
    }
    # A line for an item completed already changes nothing, in its batch or another.
    assert store.apply_outcomes(pk, a.pk, [done(1, "again")], max_attempts=3) == 0
    assert store.item_rows(pk, 0, 1)[0].output_text == "ok"


def test_a_deleted_run_leaves_no_completions(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = ended(store, pk, [1, 2])
    store.apply_outcomes(pk, batch.pk, [done(1), done(2)], max_attempts=3)
    store.delete_run(pk)
    assert _raw(store, pk) == ([], [])


def test_going_back_to_0007_and_forth_keeps_every_item_as_it_is(pg_url: str) -> None:
    from batchor.stores.migrate import downgrade, upgrade

    store = open_store(pg_url)
    pk = make_run(store, n=5)
    batch = ended(store, pk, [1, 2, 3])
    submitted(store, pk, [4])
    lines = [done(1, "one"), ItemOutcome(2, "failed", None, "invalid", "no", False)]
    store.apply_outcomes(pk, batch.pk, lines, max_attempts=3)
    before = store.item_rows(pk, 0, 10)
    downgrade(store.engine, "0007")

    def rows() -> list[tuple[object, ...]]:
        with store.engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    sa.text(
                        "SELECT seq, status, attempts, output_text, input_tokens,"
                        " output_tokens, done_tick FROM batchor_items ORDER BY seq"
                    )
                )
            ]

    # 0007's rows: the completion folded into its item, items of sent batches submitted.
    tick = before[0].done_tick
    assert rows() == [
        (1, "completed", 1, "one", 3, 2, tick),
        (2, "failed", 1, None, None, None, tick),
        (3, "submitted", 0, None, None, None, None),
        (4, "submitted", 0, None, None, None, None),
        (5, "pending", 0, None, None, None, None),
    ]
    upgrade(store.engine)
    assert [r[1] for r in rows()] == ["completed", "failed", "queued", "queued", "pending"]
    assert store.item_rows(pk, 0, 10) == before
    assert statuses(store, pk) == {
        ItemStatus.COMPLETED: 1,
        ItemStatus.FAILED: 1,
        ItemStatus.SUBMITTED: 2,
        ItemStatus.PENDING: 1,
    }
    store.close()
