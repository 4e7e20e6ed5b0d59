"""Runs: created once, read back typed, listed in one query, moved only from the status a
caller expects, marked, cancelled and deleted."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from batchor.states import ItemStatus, RunStatus
from batchor.stores.base import SourcePart
from batchor.stores.sql import SqlStateStore

from .helpers import CONFIG, make_batch, make_run, new_item, race, statuses, submitted


def test_a_run_is_created_once_and_read_back_typed(store: SqlStateStore) -> None:
    record, created = store.create_run("r", {"b": [1, 2], "a": None}, "fp")
    assert created
    again, created_again = store.create_run("r", {"other": 1}, "fp2")
    assert not created_again
    assert again == record == store.get_run("r")
    assert record.config == {"a": None, "b": [1, 2]}
    assert (record.status, record.fingerprint, record.prompt_fingerprint) == (
        RunStatus.RUNNING,
        "fp",
        None,
    )
    assert (record.ingest_complete, record.ingested_count, record.next_slice) == (False, 0, 0)
    assert (record.source_parts, record.collected, record.exported_at) == ((), None, None)
    assert store.get_run("missing") is None


def test_two_workers_creating_the_same_run_make_one(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    results = race([store, rival], lambda s, i: s.create_run("same", CONFIG, f"fp{i}"))
    assert sorted(created for _, created in results) == [False, True]
    assert results[0][0].pk == results[1][0].pk
    assert len(store.list_runs()) == 1


def test_runs_are_listed_newest_first_in_one_query(store: SqlStateStore) -> None:
    for name in ("a", "b", "c"):
        store.create_run(name, CONFIG, "fp")
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        listed = store.list_runs()
        newest = store.list_runs(limit=2)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    assert [r.run_id for r in listed] == ["c", "b", "a"]
    assert [r.run_id for r in newest] == ["c", "b"]
    assert listed[0] == store.get_run("c")
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2


def test_the_status_moves_only_from_an_expected_one(store: SqlStateStore) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    paused = [RunStatus.PAUSED]
    assert not store.set_run_status(record.pk, RunStatus.RUNNING, expected=paused)
    assert store.set_run_status(
        record.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING], pause_reason="quota"
    )
    after = store.get_run("r")
    assert after is not None
    assert (after.status, after.pause_reason) == (RunStatus.PAUSED, "quota")
    assert store.set_run_status(record.pk, RunStatus.RUNNING, expected=paused)
    assert store.set_run_status(record.pk, RunStatus.COMPLETED)  # unconditional
    assert not store.set_run_status(record.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING])


def test_of_two_workers_pausing_a_run_one_moves_it(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    won = race(
        [store, rival],
        lambda s, i: s.set_run_status(
            record.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING], pause_reason=f"w{i}"
        ),
    )
    assert sorted(won) == [False, True]


def test_a_cancel_is_requested_once_and_remembers_remote(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    assert sorted(race([store, rival], lambda s, i: s.request_cancel(record.pk, remote=True))) == [
        False,
        True,
    ]
    after = store.get_run("r")
    assert after is not None
    assert (after.status, after.cancel_remote, after.pause_reason) == (
        RunStatus.CANCELLING,
        True,
        None,
    )
    assert not store.request_cancel(record.pk, remote=False)  # already cancelling


def test_a_paused_run_can_be_cancelled(store: SqlStateStore) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    store.set_run_status(record.pk, RunStatus.PAUSED, pause_reason="why")
    assert store.request_cancel(record.pk, remote=False)
    after = store.get_run("r")
    assert after is not None
    assert (after.status, after.cancel_remote, after.pause_reason) == (
        RunStatus.CANCELLING,
        False,
        None,
    )


def test_backoff_fingerprint_and_marks_are_recorded(store: SqlStateStore) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    store.set_backoff(record.pk, 123.5, 2)
    store.set_prompt_fingerprint(record.pk, "prompt-fp")
    store.mark_exported(record.pk, 10.0)
    store.mark_pruned(record.pk, 11.0)
    result = {"run_id": "r", "uri": "file:///x.jsonl", "results": 3, "counts": {"completed": 3}}
    store.record_collected(record.pk, result)
    after = store.get_run("r")
    assert after is not None
    assert (after.backoff_until, after.backoff_count) == (123.5, 2)
    assert after.prompt_fingerprint == "prompt-fp"
    assert (after.exported_at, after.pruned_at) == (10.0, 11.0)
    assert after.collected == result
    store.set_backoff(record.pk, None, 0)
    cleared = store.get_run("r")
    assert cleared is not None
    assert (cleared.backoff_until, cleared.backoff_count) == (None, 0)


def test_source_parts_round_trip_typed(store: SqlStateStore) -> None:
    record, _ = store.create_run("r", CONFIG, "fp")
    parts = [SourcePart("a.csv", 1), SourcePart("b.csv", 3)]
    assert store.add_items(
        record.pk,
        [new_item(1), new_item(2), new_item(3)],
        next_slice=1,
        ingested_count=3,
        checkpoint="cp",
        complete=False,
        source_parts=parts,
    )
    # A slice that changes no part leaves them as they were.
    assert store.add_items(
        record.pk, [new_item(4)], next_slice=2, ingested_count=4, checkpoint="cp4", complete=True
    )
    after = store.get_run("r")
    assert after is not None
    assert after.source_parts == (("a.csv", 1), ("b.csv", 3))
    assert after.source_parts[1].first_seq == 3
    assert (after.ingested_count, after.next_slice, after.source_checkpoint) == (4, 2, "cp4")
    assert after.ingest_complete


def test_cancelling_items_takes_only_those_never_sent(store: SqlStateStore) -> None:
    pk = make_run(store, n=6)
    a = make_batch(store, pk, [1, 2])
    make_batch(store, pk, [3, 4])
    assert store.cancel_items(pk, a.pk) == 2
    assert store.cancel_items(pk, a.pk) == 0
    assert statuses(store, pk) == {
        ItemStatus.CANCELLED: 2,
        ItemStatus.QUEUED: 2,
        ItemStatus.PENDING: 2,
    }
    assert store.cancel_items(pk) == 4  # the run's: pending and queued alike
    assert statuses(store, pk) == {ItemStatus.CANCELLED: 6}
    assert all(r.done_tick for r in store.item_rows(pk, 0, 10))


def test_cancelling_items_leaves_those_the_provider_holds(store: SqlStateStore) -> None:
    pk = make_run(store, n=5)
    sent = submitted(store, pk, [1, 2])
    make_batch(store, pk, [3, 4])
    assert store.cancel_items(pk, sent.pk) == 0
    assert store.cancel_items(pk) == 3
    assert statuses(store, pk) == {ItemStatus.CANCELLED: 3, ItemStatus.SUBMITTED: 2}


def test_a_deleted_run_leaves_nothing(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    make_batch(store, pk, [1])
    store.fail_pending(pk, [2], "too_large", "no")
    other = make_run(store, n=1, run_id="other")
    store.delete_run(pk)
    assert store.get_run("r") is None
    assert store.item_counts(pk) == dict.fromkeys(ItemStatus, 0)
    assert store.batch_counts(pk) == {}
    assert statuses(store, other) == {ItemStatus.PENDING: 1}
