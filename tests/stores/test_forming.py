"""Batches formed at ingestion: a slice's items are born ``queued`` in the batches its owner
still forms (pending where the batch is gone), each batch counting them; the owner seals a
batch ``prepared`` under its key; a batch dissolved gives its items back to pending; of a
seal and a dissolution, or of two dissolutions, exactly one wins."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import FormingItems
from batchor.stores.schema import items
from batchor.stores.sql import SqlStateStore

from .helpers import CONFIG, T, fetch, new_item, race, statuses

OWNER = "host-a:100:1"
LEASE = T + 60


def _run(store: SqlStateStore) -> int:
    record, created = store.create_run("r", CONFIG, "fp")
    assert created
    return record.pk


def _slice(
    store: SqlStateStore,
    run_pk: int,
    seqs: range,
    segments: Sequence[tuple[int, int, int]],
    *,
    lease: float = LEASE,
    complete: bool = False,
) -> bool:
    return store.add_items(
        run_pk,
        [new_item(s) for s in seqs],
        next_slice=seqs[-1],
        ingested_count=seqs[-1],
        checkpoint=str(seqs[-1]),
        complete=complete,
        forming=FormingItems(OWNER, lease, segments),
    )


def _in_batch(store: SqlStateStore, run_pk: int, batch_pk: int) -> list[int]:
    """Seqs of the run's items recorded in the batch."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(items.c.seq)
            .where(items.c.run_pk == run_pk, items.c.batch_pk == batch_pk)
            .order_by(items.c.seq)
        )
        return [int(seq) for (seq,) in rows]


def _seal(store: SqlStateStore, batch_pk: int, count: int, owner: str = OWNER) -> object:
    return store.seal_batch(
        batch_pk,
        owner,
        batch_key="r/000000",
        input_artifact="runs/r/batches/000000/input.jsonl",
        request_count=count,
        input_bytes=10 * count,
        est_tokens=10 * count,
        quota_scope=None,
        lease_until=LEASE + 5,
    )


def test_items_are_born_queued_in_the_batches_their_slices_name(store: SqlStateStore) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    b = store.open_batch(pk, "r/forming-b", OWNER, LEASE)
    # Items 1-3 in a, 4-5 in b; item 6 in no batch.
    assert _slice(store, pk, range(1, 4), [(a, 1, 3)])
    assert _slice(store, pk, range(4, 7), [(b, 4, 5)], complete=True)
    assert statuses(store, pk) == {ItemStatus.QUEUED: 5, ItemStatus.PENDING: 1}
    assert _in_batch(store, pk, a) == [1, 2, 3]
    assert _in_batch(store, pk, b) == [4, 5]
    assert [p.seq for p in store.pending_items(pk, 0, 100)] == [6]
    forming = store.batches(pk, [BatchStatus.FORMING])
    assert [(x.pk, x.request_count, x.claimed_by) for x in forming] == [
        (a, 3, OWNER),
        (b, 2, OWNER),
    ]
    assert store.batch_counts(pk) == {"forming": 2}


def test_a_slice_may_fill_two_batches_and_renews_every_batch_its_owner_forms(
    store: SqlStateStore,
) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    other = store.open_batch(pk, "r/forming-o", "host-b:7:1", LEASE)
    assert _slice(store, pk, range(1, 3), [(a, 1, 5)])
    b = store.open_batch(pk, "r/forming-b", OWNER, LEASE)
    assert _slice(store, pk, range(3, 9), [(a, 1, 5), (b, 6, 8)], lease=LEASE + 30)
    assert _in_batch(store, pk, a) == [1, 2, 3, 4, 5]
    assert _in_batch(store, pk, b) == [6, 7, 8]
    assert fetch(store, a).request_count == 5
    assert (fetch(store, a).lease_until, fetch(store, b).lease_until) == (LEASE + 30,) * 2
    assert fetch(store, other).lease_until == LEASE  # another owner's batch is not renewed


def test_items_of_a_batch_no_longer_forming_go_in_pending(store: SqlStateStore) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    assert _slice(store, pk, range(1, 3), [(a, 1, 4)])
    assert store.dissolve_batch(a) == 2
    assert _slice(store, pk, range(3, 5), [(a, 1, 4)])
    assert statuses(store, pk) == {ItemStatus.PENDING: 4}
    # Nor does a batch formed by another owner take them.
    b = store.open_batch(pk, "r/forming-b", "host-b:7:1", LEASE)
    assert _slice(store, pk, range(5, 7), [(b, 5, 6)])
    assert _in_batch(store, pk, b) == []
    assert fetch(store, b).request_count == 0


def test_a_slice_refused_leaves_its_batches_as_they_were(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    assert _slice(store, pk, range(1, 3), [(a, 1, 2)])
    assert not _slice(store, pk, range(1, 3), [(a, 1, 2)], lease=LEASE + 9)  # recorded
    assert (fetch(store, a).request_count, fetch(store, a).lease_until) == (2, LEASE)


def test_the_owner_seals_a_batch_prepared_under_its_key(store: SqlStateStore) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    b = store.open_batch(pk, "r/forming-b", OWNER, LEASE)
    assert _slice(store, pk, range(1, 5), [(a, 1, 2), (b, 3, 4)], complete=True)
    assert _seal(store, a, 2, owner="host-b:7:1") is None  # not its owner
    assert _seal(store, a, 3) is None  # not the items it holds
    assert fetch(store, a).status is BatchStatus.FORMING
    sealed = _seal(store, a, 2)
    assert sealed == fetch(store, a)
    assert (sealed.status, sealed.batch_key, sealed.input_artifact) == (  # type: ignore[attr-defined]
        BatchStatus.PREPARED,
        "r/000000",
        "runs/r/batches/000000/input.jsonl",
    )
    # Held by its sealer, who uploads it, for the lease it renewed.
    assert (sealed.claimed_by, sealed.lease_until, sealed.input_bytes) == (OWNER, LEASE + 5, 20)  # type: ignore[attr-defined]
    assert fetch(store, b).lease_until == LEASE + 5  # the owner's other batch, renewed
    assert _seal(store, a, 2) is None  # once
    assert store.dissolve_batch(a) is None  # a sealed batch is not dissolved
    assert _in_batch(store, pk, a) == [1, 2]
    assert [x.pk for x in store.batches(pk, [BatchStatus.PREPARED])] == [a]


def test_a_dissolved_batch_gives_back_its_queued_items_only(store: SqlStateStore) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    assert _slice(store, pk, range(1, 4), [(a, 1, 3)], complete=True)
    store.cancel_items(pk, a)  # the run's cancel reached its items first
    assert statuses(store, pk) == {ItemStatus.CANCELLED: 3}
    assert store.dissolve_batch(a) == 0
    assert statuses(store, pk) == {ItemStatus.CANCELLED: 3}
    assert store.get_batch(a) is None
    assert store.batch_counts(pk) == {}


def test_a_lease_renewed_meanwhile_keeps_the_batch(store: SqlStateStore) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    assert _slice(store, pk, range(1, 3), [(a, 1, 2)], lease=LEASE + 60)
    assert store.dissolve_batch(a, LEASE) is None  # the lease seen is not the lease now
    assert fetch(store, a).status is BatchStatus.FORMING
    assert store.dissolve_batch(a, LEASE + 60) == 2
    assert statuses(store, pk) == {ItemStatus.PENDING: 2}
    assert [p.seq for p in store.pending_items(pk, 0, 100)] == [1, 2]


def test_of_a_seal_and_a_dissolution_exactly_one_wins(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    assert _slice(store, pk, range(1, 4), [(a, 1, 3)], complete=True)
    sealed, dissolved = race(
        [store, rival],
        lambda s, i: _seal(s, a, 3) if i == 0 else s.dissolve_batch(a, LEASE),  # type: ignore[arg-type]
    )
    assert (sealed is None) != (dissolved is None)
    if sealed is not None:
        assert fetch(store, a).status is BatchStatus.PREPARED
        assert statuses(store, pk) == {ItemStatus.QUEUED: 3}
    else:
        assert dissolved == 3
        assert store.get_batch(a) is None
        assert statuses(store, pk) == {ItemStatus.PENDING: 3}


def test_of_two_dissolutions_exactly_one_wins(store: SqlStateStore, rival: SqlStateStore) -> None:
    pk = _run(store)
    a = store.open_batch(pk, "r/forming-a", OWNER, LEASE)
    assert _slice(store, pk, range(1, 4), [(a, 1, 3)], complete=True)
    results = race([store, rival], lambda s, i: s.dissolve_batch(a, LEASE))
    assert sorted(results, key=lambda r: r is None) == [3, None]
    assert statuses(store, pk) == {ItemStatus.PENDING: 3}
