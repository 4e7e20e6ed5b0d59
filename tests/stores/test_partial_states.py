"""Crash-shaped states: what a worker killed between two writes leaves behind, and how the
next worker's transitions pick it up - each step exactly once."""

from __future__ import annotations

import sqlalchemy as sa

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import ItemOutcome
from batchor.stores.schema import item_failures
from batchor.stores.sql import SqlStateStore

from .forge import forge_batch
from .helpers import (
    T,
    done,
    ended,
    fetch,
    item_states,
    make_batch,
    make_run,
    race,
    statuses,
    submitted,
)


def test_a_claimed_create_with_no_provider_id_is_taken_over_once(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store, n=2)
    batch = make_batch(store, pk, [1, 2])
    assert store.record_upload(batch.pk, "file")
    assert store.claim_create(batch.pk, "dead-host:1:1", seen=None, at=T)
    # ... and the worker died before the provider answered: no provider batch id.
    left = fetch(store, batch.pk)
    assert (left.status, left.provider_batch_id, left.create_started_at) == (
        BatchStatus.UPLOADED,
        None,
        T,
    )
    assert statuses(store, pk) == {ItemStatus.QUEUED: 2}
    # Two workers that saw that claim take it over: one wins, the other creates nothing.
    won = race(
        [store, rival],
        lambda s, i: s.claim_create(batch.pk, f"w{i}:1:1", seen=left.create_started_at, at=T + 1),
    )
    assert sorted(won) == [False, True]
    # Its create lands: the items go out once; a late adoption of the same batch loses.
    assert store.mark_submitted(batch.pk, "batch_1", "validating")
    assert not rival.mark_submitted(batch.pk, "batch_2", "validating")
    assert not store.claim_adoption(batch.pk, BatchStatus.UPLOADED, "x:1:1", "f", at=T + 2)
    assert statuses(store, pk) == {ItemStatus.SUBMITTED: 2}


def test_a_claimed_create_proven_absent_is_dropped_with_its_items(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = make_batch(store, pk, [1, 2], scope="d|")
    assert store.reserve_tokens(batch.pk, limit=20)
    store.record_upload(batch.pk, "file")
    store.claim_create(batch.pk, "dead:1:1", seen=None, at=T)
    assert store.drop_batch(batch.pk, BatchStatus.UPLOADED, T)
    assert statuses(store, pk) == {ItemStatus.CANCELLED: 2}
    assert not fetch(store, batch.pk).reserved  # its reservation went back
    again = make_run(store, n=1, run_id="again")
    assert store.reserve_tokens(make_batch(store, again, [1], scope="d|").pk, limit=10)


def test_a_batch_with_outcomes_half_applied_is_finished_by_a_second_collection(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store, n=6)
    batch = ended(store, pk, [1, 2, 3, 4, 5, 6])
    lines = [
        done(1),
        ItemOutcome(2, "failed", error_class="invalid", message="bad"),
        done(3),
        ItemOutcome(4, "retry", error_class="server_error", message="x", retryable=True),
        done(5),
    ]  # item 6 never answered
    # The first collector applied its first chunk, then died before finishing the batch.
    assert store.apply_outcomes(pk, batch.pk, lines[:2], max_attempts=3) == 2
    left = fetch(store, batch.pk)
    assert left.status is BatchStatus.ENDED
    # The next collector starts over from the first line: what was applied stays applied.
    assert rival.claim_batch(batch.pk, BatchStatus.ENDED, "next:1:1", 60.0)
    assert rival.apply_outcomes(pk, batch.pk, lines, max_attempts=3) == 3
    assert (
        rival.requeue_unanswered(pk, batch.pk, charge=("missing", "no line"), max_attempts=3) == 1
    )
    assert rival.finish_batch(pk, batch.pk, 30, 20)
    assert not store.finish_batch(pk, batch.pk, 30, 20)  # the dead worker's view loses
    assert item_states(store, pk) == [
        (ItemStatus.COMPLETED, 1),
        (ItemStatus.FAILED, 1),
        (ItemStatus.COMPLETED, 1),
        (ItemStatus.PENDING, 1),
        (ItemStatus.COMPLETED, 1),
        (ItemStatus.PENDING, 1),
    ]
    with store.engine.connect() as conn:
        audit = conn.execute(
            sa.select(item_failures.c.seq, item_failures.c.attempt).order_by(item_failures.c.seq)
        ).all()
    assert [tuple(r) for r in audit] == [(2, 1), (4, 1), (6, 1)]  # one row per charge
    run = store.get_run("r")
    assert run is not None
    assert (run.input_tokens, run.output_tokens) == (30, 20)


def test_a_batch_prepared_but_never_uploaded_goes_on_from_its_upload(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = make_batch(store, pk, [1, 2])
    # The worker died after recording the batch, before uploading: items stay queued.
    assert statuses(store, pk) == {ItemStatus.QUEUED: 2}
    assert store.pending_items(pk, 0, 10) == []  # never packed twice
    assert store.record_upload(batch.pk, "file")
    assert store.claim_create(batch.pk, "w:1:1", seen=None, at=T)
    assert store.mark_submitted(batch.pk, "b", "validating")
    assert statuses(store, pk) == {ItemStatus.SUBMITTED: 2}


def test_items_queued_in_a_refused_batch_go_back_to_pending(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = make_batch(store, pk, [1, 2])
    store.record_upload(batch.pk, "file")
    from batchor.stores.base import BatchError

    assert store.reject(batch.pk, BatchStatus.UPLOADED, BatchError("create_rejected", "no"))
    moved = store.requeue_unanswered(pk, batch.pk, charge=("create_rejected", "no"), max_attempts=3)
    assert moved == 2
    assert item_states(store, pk) == [(ItemStatus.PENDING, 1)] * 2
    assert [p.seq for p in store.pending_items(pk, 0, 10)] == [1, 2]


def test_a_collect_claim_of_a_dead_worker_is_taken_over_after_its_lease(
    store: SqlStateStore,
) -> None:
    pk = make_run(store, n=1)
    batch = ended(store, pk, [1])
    assert store.claim_batch(batch.pk, BatchStatus.ENDED, "dead:1:1", 600.0)
    assert not store.claim_batch(batch.pk, BatchStatus.ENDED, "live:2:2", 60.0)
    forge_batch(store, batch.pk, lease_until=T)  # long expired
    assert store.claim_batch(batch.pk, BatchStatus.ENDED, "live:2:2", 60.0)


def test_a_submitted_batch_read_before_a_crash_is_polled_on(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = submitted(store, pk, [1, 2])
    assert store.record_provider_status(batch.pk, "in_progress")
    assert store.mark_ended(batch.pk, "completed", output_file_id="o", error_file_id=None)
    assert not store.mark_ended(batch.pk, "expired", output_file_id=None, error_file_id=None)
    assert fetch(store, batch.pk).provider_status == "completed"
