"""Helpers of the store contract suite: runs, items and batches made through the port, and
races run between two callers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from batchor.states import ItemStatus
from batchor.stores.base import BatchRecord, ItemOutcome, NewItem, StateStore

CONFIG = {"endpoint": "/v1/responses", "model": "m", "max_attempts": 3}
T = 1_700_000_000.0
"""When create claims in these tests start (the engine passes its clock's time)."""


def new_item(seq: int, item_id: str | None = None, tokens: int = 10) -> NewItem:
    """An item whose request body is 10 bytes at ``seq * 10`` of slice 0."""
    return NewItem(seq, item_id or f"item-{seq}", 0, seq * 10, 10, "h", tokens, None)


def make_run(store: StateStore, n: int = 4, run_id: str = "r", *, complete: bool = True) -> int:
    """A run holding items 1..n (pending); returns its pk."""
    record, created = store.create_run(run_id, CONFIG, "fp")
    assert created
    assert store.add_items(
        record.pk,
        [new_item(i) for i in range(1, n + 1)],
        next_slice=1,
        ingested_count=n,
        checkpoint=str(n),
        complete=complete,
    )
    return record.pk


def make_batch(
    store: StateStore, run_pk: int, seqs: Sequence[int], scope: str | None = None
) -> BatchRecord:
    """A prepared batch of those items (queued), 10 estimated tokens an item."""
    number = store.allocate_batch_number(run_pk)
    record = store.record_batch(
        run_pk,
        f"{run_pk}/{number:06d}",
        f"runs/r/batches/{number:06d}/input.jsonl",
        list(seqs),
        100,
        est_tokens=10 * len(seqs),
        quota_scope=scope,
    )
    assert record is not None
    return record


def submitted(store: StateStore, run_pk: int, seqs: Sequence[int]) -> BatchRecord:
    """A batch of those items, created at the provider (items submitted)."""
    batch = make_batch(store, run_pk, seqs)
    assert store.record_upload(batch.pk, f"file-{batch.pk}")
    assert store.claim_create(batch.pk, "me:1:1", seen=None, at=T)
    assert store.mark_submitted(batch.pk, f"batch_{batch.pk}", "validating")
    return fetch(store, batch.pk)


def ended(store: StateStore, run_pk: int, seqs: Sequence[int]) -> BatchRecord:
    """A batch of those items that the provider has ended."""
    batch = submitted(store, run_pk, seqs)
    assert store.mark_ended(
        batch.pk, "completed", output_file_id=f"out-{batch.pk}", error_file_id=None
    )
    return fetch(store, batch.pk)


def fetch(store: StateStore, batch_pk: int) -> BatchRecord:
    """The batch as stored now."""
    batch = store.get_batch(batch_pk)
    assert batch is not None
    return batch


def statuses(store: StateStore, run_pk: int) -> dict[ItemStatus, int]:
    """Items by status, only the statuses some item is in."""
    return {s: n for s, n in store.item_counts(run_pk).items() if n}


def item_states(store: StateStore, run_pk: int) -> list[tuple[ItemStatus, int]]:
    """(status, attempts) of every item in seq order."""
    return [(r.status, r.attempts) for r in store.item_rows(run_pk, 0, 1000)]


def done(seq: int, text: str = "ok") -> ItemOutcome:
    """A completed line."""
    return ItemOutcome(seq, "completed", output_text=text, input_tokens=3, output_tokens=2)


def race(stores: Sequence[StateStore], call: Callable[[StateStore, int], Any]) -> list[Any]:
    """``call(store, i)`` by each caller with its own store, all at once where the store
    takes two threads (the in-memory one holds a single connection: one after the other,
    each from the same view). Returns the results in caller order."""
    results: list[Any] = [None] * len(stores)
    errors: list[BaseException] = []
    if not all(s.thread_safe for s in stores):
        return [call(s, i) for i, s in enumerate(stores)]
    barrier = threading.Barrier(len(stores))

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = call(stores[i], i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
