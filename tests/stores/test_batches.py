"""Batch transitions: each a compare-and-set on the batch's status (and its create claim),
True only for the caller that won; a loser changes nothing."""

from __future__ import annotations

import time

import pytest

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import BatchError
from batchor.stores.sql import SqlStateStore

from .helpers import T, ended, fetch, make_batch, make_run, race, statuses, submitted


def test_an_upload_is_recorded_once(store: SqlStateStore, rival: SqlStateStore) -> None:
    batch = make_batch(store, make_run(store), [1, 2])
    won = race([store, rival], lambda s, i: s.record_upload(batch.pk, f"file-{i}"))
    assert sorted(won) == [False, True]
    after = fetch(store, batch.pk)
    assert after.status is BatchStatus.UPLOADED
    assert after.file_id == f"file-{won.index(True)}"
    assert not store.record_upload(batch.pk, "file-late")  # no longer prepared


def _held(store: SqlStateStore, until: float) -> int:
    """A prepared batch its packer, ``packer:1:1``, holds for its upload until ``until``."""
    pk = make_run(store)
    record = store.record_batch(
        pk, "r/000000", "in.jsonl", [1, 2], 10, owner="packer:1:1", lease_until=until
    )
    assert record is not None
    assert (record.claimed_by, record.lease_until) == ("packer:1:1", until)
    return record.pk


@pytest.mark.parametrize("step", ["upload", "adoption", "rejection", "submission"])
def test_a_packers_hold_ends_when_the_batch_leaves_prepared(
    store: SqlStateStore, step: str
) -> None:
    now = time.time()
    batch_pk = _held(store, now + 600)
    moved = {
        "upload": lambda: store.record_upload(batch_pk, "file"),
        "adoption": lambda: store.claim_adoption(
            batch_pk, BatchStatus.PREPARED, "adopter:2:2", "remote", at=now
        ),
        "rejection": lambda: store.reject(
            batch_pk, BatchStatus.PREPARED, BatchError("invalid_file", "refused")
        ),
        "submission": lambda: store.mark_submitted(batch_pk, "batch_1", "validating"),
    }[step]()
    assert moved
    after = fetch(store, batch_pk)
    assert after.lease_until is None
    assert after.claimed_by == {"upload": None, "adoption": "adopter:2:2"}.get(step, "packer:1:1")
    if step == "rejection":  # a collector takes the ended batch at once, not after the hold
        assert store.claim_batch(batch_pk, BatchStatus.ENDED, "collector:3:3", 60)


def test_a_create_is_claimed_by_one_worker(store: SqlStateStore, rival: SqlStateStore) -> None:
    batch = make_batch(store, make_run(store), [1, 2])
    assert not store.claim_create(batch.pk, "a:1:1", seen=None, at=T)  # not uploaded yet
    assert store.record_upload(batch.pk, "file")
    won = race([store, rival], lambda s, i: s.claim_create(batch.pk, f"w{i}:1:1", seen=None, at=T))
    assert sorted(won) == [False, True]
    after = fetch(store, batch.pk)
    assert after.claimed_by == f"w{won.index(True)}:1:1"
    assert after.create_started_at is not None
    assert after.status is BatchStatus.UPLOADED


def test_a_create_claim_is_retaken_only_from_the_claim_seen(store: SqlStateStore) -> None:
    batch = make_batch(store, make_run(store), [1])
    store.record_upload(batch.pk, "file")
    assert store.claim_create(batch.pk, "a:1:1", seen=None, at=T)
    first = fetch(store, batch.pk).create_started_at
    assert not store.claim_create(batch.pk, "b:2:2", seen=None, at=T)  # a create was started
    assert first is not None
    assert not store.claim_create(batch.pk, "b:2:2", seen=first - 1, at=T)  # not the claim seen
    assert store.claim_create(batch.pk, "b:2:2", seen=first, at=T + 5)
    after = fetch(store, batch.pk)
    assert (after.claimed_by, after.create_started_at) == ("b:2:2", T + 5)


@pytest.mark.parametrize("uploaded", [False, True])
def test_an_adoption_claims_the_batch_as_a_create_would(
    store: SqlStateStore, uploaded: bool
) -> None:
    batch = make_batch(store, make_run(store), [1, 2])
    if uploaded:
        store.record_upload(batch.pk, "ours")
    status = fetch(store, batch.pk).status
    assert store.claim_adoption(batch.pk, status, "a:1:1", "theirs", at=T)
    after = fetch(store, batch.pk)
    assert (after.status, after.file_id, after.claimed_by) == (
        BatchStatus.UPLOADED,
        "theirs",
        "a:1:1",
    )
    assert after.create_started_at is not None
    # A second adoption, or a create from the old view, loses to the claim.
    assert not store.claim_adoption(batch.pk, BatchStatus.UPLOADED, "b:2:2", "x", at=T)
    assert not store.claim_create(batch.pk, "b:2:2", seen=None, at=T)


def test_an_adoption_and_a_create_race_for_one_claim(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    batch = make_batch(store, make_run(store), [1])
    store.record_upload(batch.pk, "file")
    won = race(
        [store, rival],
        lambda s, i: (
            s.claim_create(batch.pk, "creator:1:1", seen=None, at=T)
            if i == 0
            else s.claim_adoption(batch.pk, BatchStatus.UPLOADED, "adopter:2:2", "remote", at=T)
        ),
    )
    assert sorted(won) == [False, True]


def test_a_batch_is_submitted_once_with_its_items(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store)
    batch = make_batch(store, pk, [1, 2])
    won = race([store, rival], lambda s, i: s.mark_submitted(batch.pk, f"batch_{i}", "validating"))
    assert sorted(won) == [False, True]
    after = fetch(store, batch.pk)
    assert after.status is BatchStatus.SUBMITTED
    assert after.provider_batch_id == f"batch_{won.index(True)}"
    assert statuses(store, pk) == {ItemStatus.SUBMITTED: 2, ItemStatus.PENDING: 2}


def test_items_read_as_submitted_while_their_batch_is_at_the_provider(
    store: SqlStateStore,
) -> None:
    pk = make_run(store, n=5)
    prepared = make_batch(store, pk, [1])
    sent = submitted(store, pk, [2, 3])
    done_batch = ended(store, pk, [4])
    assert statuses(store, pk) == {
        ItemStatus.PENDING: 1,
        ItemStatus.QUEUED: 1,
        ItemStatus.SUBMITTED: 3,
    }
    rows = store.item_rows(pk, 0, 10)
    assert [r.status for r in rows] == [
        ItemStatus.QUEUED,
        ItemStatus.SUBMITTED,
        ItemStatus.SUBMITTED,
        ItemStatus.SUBMITTED,
        ItemStatus.PENDING,
    ]
    only = store.item_rows(pk, 0, 10, [ItemStatus.SUBMITTED])
    assert [r.seq for r in only] == [2, 3, 4]
    assert [r.seq for r in store.item_rows(pk, 0, 10, [ItemStatus.QUEUED])] == [1]
    assert prepared.pk != sent.pk != done_batch.pk


def test_submitting_clears_the_backoff(store: SqlStateStore) -> None:
    batch = make_batch(store, make_run(store), [1])
    assert store.postpone(batch.pk, BatchStatus.PREPARED, failures=3, not_before=1e12)
    assert store.mark_submitted(batch.pk, "b", "in_progress")
    after = fetch(store, batch.pk)
    assert (after.failures, after.not_before, after.provider_status) == (0, None, "in_progress")


def test_a_postponement_holds_only_in_the_status_expected(store: SqlStateStore) -> None:
    batch = make_batch(store, make_run(store), [1])
    assert not store.postpone(batch.pk, BatchStatus.UPLOADED, failures=1, not_before=50.0)
    assert store.postpone(batch.pk, BatchStatus.PREPARED, failures=2, not_before=60.0)
    after = fetch(store, batch.pk)
    assert (after.status, after.failures, after.not_before) == (BatchStatus.PREPARED, 2, 60.0)


@pytest.mark.parametrize("uploaded", [False, True])
def test_a_rejected_batch_ends_with_the_refusal(store: SqlStateStore, uploaded: bool) -> None:
    batch = make_batch(store, make_run(store), [1])
    if uploaded:
        store.record_upload(batch.pk, "file")
    status = fetch(store, batch.pk).status
    other = BatchStatus.PREPARED if uploaded else BatchStatus.UPLOADED
    assert not store.reject(batch.pk, other, BatchError("x", "y"))
    assert store.reject(batch.pk, status, BatchError("create_rejected", "the file is bad"))
    after = fetch(store, batch.pk)
    assert (after.status, after.provider_status) == (BatchStatus.ENDED, "rejected")
    assert after.errors == (BatchError("create_rejected", "the file is bad"),)
    assert after.errors[0].message == "the file is bad"
    assert not store.reject(batch.pk, status, BatchError("again", "no"))


def test_provider_statuses_are_recorded_only_while_submitted(store: SqlStateStore) -> None:
    pk = make_run(store)
    batch = make_batch(store, pk, [1])
    assert not store.record_provider_status(batch.pk, "in_progress")
    batch = submitted(store, pk, [2])
    assert store.record_provider_status(batch.pk, "finalizing")
    assert fetch(store, batch.pk).provider_status == "finalizing"


def test_a_batch_is_ended_once_with_its_files_and_errors(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    batch = submitted(store, make_run(store), [1, 2])
    errors = [BatchError("invalid_request", "line 1"), BatchError("other", "x")]
    won = race(
        [store, rival],
        lambda s, i: s.mark_ended(
            batch.pk, "failed", output_file_id=f"out-{i}", error_file_id="err", errors=errors
        ),
    )
    assert sorted(won) == [False, True]
    after = fetch(store, batch.pk)
    assert (after.status, after.provider_status, after.error_file_id) == (
        BatchStatus.ENDED,
        "failed",
        "err",
    )
    assert after.output_file_id == f"out-{won.index(True)}"
    assert after.errors == tuple(errors)
    assert not store.record_provider_status(batch.pk, "completed")  # ended: left alone


def test_a_collect_claim_has_one_holder_until_its_lease_ends(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    batch = ended(store, make_run(store), [1])
    won = race(
        [store, rival],
        lambda s, i: s.claim_batch(batch.pk, BatchStatus.ENDED, f"w{i}:1:1", 60.0),
    )
    assert sorted(won) == [False, True]
    holder, other = f"w{won.index(True)}:1:1", f"w{won.index(False)}:1:1"
    assert store.claim_batch(batch.pk, BatchStatus.ENDED, holder, 60.0)  # renewed
    assert not store.claim_batch(batch.pk, BatchStatus.ENDED, other, 60.0)
    assert store.claim_batch(batch.pk, BatchStatus.ENDED, other, 60.0, steal_from=holder)
    assert fetch(store, batch.pk).claimed_by == other
    assert not store.claim_batch(batch.pk, BatchStatus.SUBMITTED, other, 60.0)
    assert store.claim_batch(batch.pk, BatchStatus.ENDED, other, -1.0)  # lease already over
    assert store.claim_batch(batch.pk, BatchStatus.ENDED, holder, 60.0)  # expired: free


def test_tokens_are_reserved_once_per_batch_and_only_while_they_fit(
    store: SqlStateStore,
) -> None:
    pk = make_run(store, n=6)
    a = make_batch(store, pk, [1, 2], scope="m|")  # 20 tokens
    b = make_batch(store, pk, [3, 4, 5], scope="m|")  # 30 tokens
    assert store.reserve_tokens(a.pk, limit=45)
    assert store.reserve_tokens(a.pk, limit=45)  # already holds its reservation: no recount
    assert not store.reserve_tokens(b.pk, limit=45)  # 20 + 30 > 45
    assert not fetch(store, b.pk).reserved  # the refusal rolled its mark back
    assert store.reserve_tokens(b.pk, limit=50)  # exactly at the limit fits
    # Dropping a never-sent batch releases its reservation.
    assert store.drop_batch(a.pk, BatchStatus.PREPARED, None)
    c = make_batch(store, pk, [6], scope="m|")
    assert store.reserve_tokens(c.pk, limit=40)  # 30 + 10


def test_two_batches_racing_for_the_last_room_get_one_reservation(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store, n=4)
    a, b = make_batch(store, pk, [1, 2], scope="s|"), make_batch(store, pk, [3, 4], scope="s|")
    won = race([store, rival], lambda s, i: s.reserve_tokens((a, b)[i].pk, limit=30))
    assert sorted(won) == [False, True]


def test_a_collected_batch_gives_its_reservation_back(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    a = make_batch(store, pk, [1], scope="g|")
    assert store.reserve_tokens(a.pk, limit=10)
    assert store.mark_submitted(a.pk, "b", "validating")
    assert store.mark_ended(a.pk, "completed", output_file_id=None, error_file_id=None)
    assert store.finish_batch(pk, a.pk, 1, 1)
    b = make_batch(store, pk, [2], scope="g|")
    assert store.reserve_tokens(b.pk, limit=10)


def test_a_batch_is_dropped_only_while_its_create_claim_is_as_seen(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store)
    batch = make_batch(store, pk, [1, 2])
    store.record_upload(batch.pk, "file")
    assert store.claim_create(batch.pk, "a:1:1", seen=None, at=T)
    started = fetch(store, batch.pk).create_started_at
    assert started is not None
    assert not store.drop_batch(batch.pk, BatchStatus.UPLOADED, None)
    assert not store.drop_batch(batch.pk, BatchStatus.UPLOADED, started - 1)
    assert not store.drop_batch(batch.pk, BatchStatus.PREPARED, started)
    assert statuses(store, pk) == {ItemStatus.QUEUED: 2, ItemStatus.PENDING: 2}
    won = race([store, rival], lambda s, i: s.drop_batch(batch.pk, BatchStatus.UPLOADED, started))
    assert sorted(won) == [False, True]
    after = fetch(store, batch.pk)
    assert (after.status, after.provider_status) == (BatchStatus.COLLECTED, "not_sent")
    assert statuses(store, pk) == {ItemStatus.CANCELLED: 2, ItemStatus.PENDING: 2}


def test_batches_are_read_by_status_oldest_first(store: SqlStateStore) -> None:
    pk = make_run(store, n=3)
    a = make_batch(store, pk, [1])
    b = submitted(store, pk, [2])
    c = make_batch(store, pk, [3])
    assert [x.pk for x in store.batches(pk, [BatchStatus.PREPARED])] == [a.pk, c.pk]
    assert [x.pk for x in store.batches(pk, list(BatchStatus))] == [a.pk, b.pk, c.pk]
    assert store.batches(pk, [BatchStatus.ENDED]) == []
    assert store.get_batch(c.pk + 1000) is None
    assert store.batch_counts(pk) == {"prepared": 2, "submitted": 1}
