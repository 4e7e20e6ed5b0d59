"""Collection: answered lines apply to items still submitted in the batch (so a line applies
at most once, whoever applies it), unanswered items go back to pending, and a batch is
marked collected once with its tokens."""

from __future__ import annotations

import sqlalchemy as sa

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import ItemOutcome
from batchor.stores.schema import item_failures, items
from batchor.stores.sql import SqlStateStore

from .helpers import done, ended, fetch, item_states, make_batch, make_run, race, submitted


def _failures(store: SqlStateStore) -> list[tuple[int, int, str, bool]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                item_failures.c.seq,
                item_failures.c.attempt,
                item_failures.c.error_class,
                item_failures.c.retryable,
            ).order_by(item_failures.c.seq, item_failures.c.attempt)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_each_kind_of_line_moves_its_item(store: SqlStateStore) -> None:
    pk = make_run(store, n=4)
    batch = submitted(store, pk, [1, 2, 3, 4])
    outcomes = [
        done(1, '{"a": 1}'),
        ItemOutcome(2, "retry", error_class="server_error", message="try again", retryable=True),
        ItemOutcome(3, "failed", error_class="invalid", message="no", input_tokens=5),
        ItemOutcome(4, "retry", output_text="{}", error_class="schema_validation", message="m"),
    ]
    assert store.apply_outcomes(pk, batch.pk, outcomes, max_attempts=3) == 4
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts) for r in rows] == [
        (ItemStatus.COMPLETED, 1),
        (ItemStatus.PENDING, 1),
        (ItemStatus.FAILED, 1),
        (ItemStatus.PENDING, 1),
    ]
    assert (rows[0].output_text, rows[0].input_tokens, rows[0].output_tokens) == ('{"a": 1}', 3, 2)
    assert (rows[0].error_class, rows[0].error_attempt) == (None, None)
    assert (rows[1].error_class, rows[1].error_message, rows[1].error_retryable) == (
        "server_error",
        "try again",
        True,
    )
    assert (rows[2].error_class, rows[2].error_attempt, rows[2].input_tokens) == ("invalid", 1, 5)
    assert rows[3].output_text == "{}"  # the reply that failed validation is kept
    assert rows[0].done_tick == rows[2].done_tick is not None
    assert (rows[1].done_tick, rows[3].done_tick) == (None, None)  # not ended: retried
    assert _failures(store) == [
        (2, 1, "server_error", True),
        (3, 1, "invalid", False),
        (4, 1, "schema_validation", False),
    ]


def test_a_retry_on_the_last_attempt_fails_the_item(store: SqlStateStore) -> None:
    pk = make_run(store, n=1)
    batch = submitted(store, pk, [1])
    retry = ItemOutcome(1, "retry", error_class="server_error", message="x", retryable=True)
    assert store.apply_outcomes(pk, batch.pk, [retry], max_attempts=1) == 1
    [row] = store.item_rows(pk, 0, 10)
    assert (row.status, row.attempts, row.error_attempt) == (ItemStatus.FAILED, 1, 1)
    assert row.done_tick is not None


def test_a_line_applies_once_whoever_applies_it(store: SqlStateStore, rival: SqlStateStore) -> None:
    pk = make_run(store, n=4)
    batch = submitted(store, pk, [1, 2, 3, 4])
    outcomes = [done(1), done(2), ItemOutcome(3, "failed", error_class="e", message="m"), done(4)]
    changed = race(
        [store, rival], lambda s, i: s.apply_outcomes(pk, batch.pk, outcomes, max_attempts=3)
    )
    assert sorted(changed) == [0, 4]
    assert [a for _, a in item_states(store, pk)] == [1, 1, 1, 1]
    assert _failures(store) == [(3, 1, "e", False)]


def test_items_an_earlier_version_wrote_submitted_still_take_their_answers(
    store: SqlStateStore,
) -> None:
    # batchor once rewrote every item of a batch to "submitted" when the batch was created;
    # a run caught mid-flight by the upgrade collects them as it does its queued items.
    pk = make_run(store, n=3)
    batch = submitted(store, pk, [1, 2, 3])
    with store.engine.begin() as conn:
        conn.execute(
            items.update()
            .where(items.c.batch_pk == batch.pk, items.c.seq < 3)
            .values(status=ItemStatus.SUBMITTED.value)
        )
    retry = ItemOutcome(2, "retry", None, "server_error", "500")
    assert store.apply_outcomes(pk, batch.pk, [done(1), retry, done(3)], max_attempts=3) == 3
    assert item_states(store, pk) == [
        (ItemStatus.COMPLETED, 1),
        (ItemStatus.PENDING, 1),
        (ItemStatus.COMPLETED, 1),
    ]
    assert store.apply_outcomes(pk, batch.pk, [done(1), done(3)], max_attempts=3) == 0


def test_lines_of_another_batch_or_an_unknown_item_change_nothing(store: SqlStateStore) -> None:
    pk = make_run(store, n=3)
    a = submitted(store, pk, [1, 2])
    b = submitted(store, pk, [3])
    assert store.apply_outcomes(pk, a.pk, [done(3), done(99)], max_attempts=3) == 0
    assert store.apply_outcomes(pk, b.pk, [], max_attempts=3) == 0
    assert [s for s, _ in item_states(store, pk)] == [ItemStatus.SUBMITTED] * 3
    assert _failures(store) == []


def test_a_batch_is_finished_once_and_its_tokens_counted_once(
    store: SqlStateStore, rival: SqlStateStore
) -> None:
    pk = make_run(store)
    batch = ended(store, pk, [1, 2])
    won = race([store, rival], lambda s, i: s.finish_batch(pk, batch.pk, 100, 7))
    assert sorted(won) == [False, True]
    run = store.get_run("r")
    assert run is not None
    assert (run.input_tokens, run.output_tokens) == (100, 7)
    after = fetch(store, batch.pk)
    assert (after.status, after.input_tokens, after.output_tokens) == (
        BatchStatus.COLLECTED,
        100,
        7,
    )
    # A batch not yet ended is not finished either.
    live = make_batch(store, pk, [3])
    assert not store.finish_batch(pk, live.pk, 5, 5)


def test_token_counts_past_any_column_are_clamped(store: SqlStateStore) -> None:
    pk = make_run(store, n=1)
    batch = ended(store, pk, [1])
    assert store.finish_batch(pk, batch.pk, 10**30, -5)
    run = store.get_run("r")
    assert run is not None
    assert (run.input_tokens, run.output_tokens) == (2**53, 0)


def test_requeueing_with_a_charge_records_the_failure_and_fails_the_last_attempt(
    store: SqlStateStore,
) -> None:
    pk = make_run(store, n=2)
    first = ended(store, pk, [1, 2])
    moved = store.requeue_unanswered(
        pk, first.pk, charge=("missing_output", "no line for it"), max_attempts=2
    )
    assert moved == 2
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts) for r in rows] == [(ItemStatus.PENDING, 1)] * 2
    assert {(r.error_class, r.error_message, r.error_retryable) for r in rows} == {
        ("missing_output", "no line for it", True)
    }
    second = ended(store, pk, [1, 2])
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
    assert _failures(store) == [
        (1, 1, "missing_output", True),
        (1, 2, "batch_failed", True),
        (2, 1, "missing_output", True),
        (2, 2, "batch_failed", True),
    ]
    # Nothing left submitted in either batch: a second requeue moves nothing.
    assert store.requeue_unanswered(pk, second.pk, charge=("x", "y"), max_attempts=2) == 0
    assert store.requeue_unanswered(pk, second.pk, charge=None, max_attempts=2) == 0


def test_requeueing_without_a_charge_leaves_the_attempts(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = ended(store, pk, [1, 2])
    assert store.requeue_unanswered(pk, batch.pk, charge=None, max_attempts=1) == 2
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts, r.error_class) for r in rows] == [
        (ItemStatus.PENDING, 0, None)
    ] * 2
    assert _failures(store) == []


def test_only_unanswered_items_are_requeued(store: SqlStateStore, rival: SqlStateStore) -> None:
    pk = make_run(store, n=3)
    batch = ended(store, pk, [1, 2, 3])
    store.apply_outcomes(pk, batch.pk, [done(2)], max_attempts=3)
    moved = race(
        [store, rival],
        lambda s, i: s.requeue_unanswered(pk, batch.pk, charge=("gone", "x"), max_attempts=3),
    )
    assert sorted(moved) == [0, 2]
    assert item_states(store, pk) == [
        (ItemStatus.PENDING, 1),
        (ItemStatus.COMPLETED, 1),
        (ItemStatus.PENDING, 1),
    ]


def test_a_seq_answered_twice_in_one_chunk_takes_its_first_line(store: SqlStateStore) -> None:
    pk = make_run(store, n=2)
    batch = submitted(store, pk, [1, 2])
    lines = [done(1, '{"first": 1}'), done(2), done(1, '{"second": 1}')]
    assert store.apply_outcomes(pk, batch.pk, lines, max_attempts=3) == 2
    rows = store.item_rows(pk, 0, 10)
    assert [(r.status, r.attempts, r.output_text) for r in rows] == [
        (ItemStatus.COMPLETED, 1, '{"first": 1}'),
        (ItemStatus.COMPLETED, 1, "ok"),
    ]


def test_replies_a_bulk_path_could_mangle_are_stored_as_given(store: SqlStateStore) -> None:
    # Replies with what a bulk path could mangle (a NUL, JSON escapes as text, non-ASCII, a
    # long reply) are stored exactly as given.
    texts = ['{"a": "\\u0000 escaped"}', '{"b": "é 😀 \\" \\\\"}', "x" * 100_000]
    if store.engine.dialect.name != "postgresql":  # Postgres text holds no NUL
        texts.append('{"c": "nul\x00inside"}')
    pk = make_run(store, n=len(texts))
    seqs = list(range(1, len(texts) + 1))
    batch = submitted(store, pk, seqs)
    lines = [done(seq, text) for seq, text in zip(seqs, texts, strict=True)]
    assert store.apply_outcomes(pk, batch.pk, lines, max_attempts=3) == len(texts)
    assert [r.output_text for r in store.item_rows(pk, 0, 10)] == texts
