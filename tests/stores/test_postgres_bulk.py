"""The Postgres bulk paths (`batchor.stores.sql.postgres`) against the real server: each COPY path
writes exactly what the executemany path writes (the store's own path on a SQLite file and on
Postgres, compared row by row), all or nothing inside its transaction; and the claims that
skip locked rows return at once instead of waiting for another worker's transaction."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchor.states import BatchStatus
from batchor.stores.base import ItemOutcome, NewItem
from batchor.stores.open import open_store
from batchor.stores.schema import batches, completions, item_failures, items, runs
from batchor.stores.sql import postgres as pg_copy

N_ITEMS = 3_000

# Text the COPY format must carry through unchanged: its own delimiters and escapes, quotes,
# non-ASCII, empty strings, and a large JSON document.
AWKWARD = [
    "plain",
    "it's \"quoted\" 'twice'",
    "tab\there\tand\tthere",
    "new\nline\r\nand\rreturn",
    "back\\slash \\N \\. \\t \\\\",
    "\\",
    "\\.",
    "ünïcödé ✓ 日本語 🎉 \u200b",
    "",
    " leading and trailing ",
    "NULL",
    "\\N",
    "\ufdd1 a noncharacter",
    json.dumps({"k": ["v" * 50, {"n": None, "t": True}] * 2_000, "q": '"\t\n\\'}),
]
# Only Postgres takes these as they are (the driver's adapters escape them).
POSTGRES_ONLY = ["\x00nul\x00", "lone \ud800 surrogate", "\ufdd0starts with the marker"]


@pytest.fixture
def pg(pg_url: str) -> Iterator[Any]:
    """A store on a fresh Postgres schema."""
    store = open_store(pg_url)
    yield store
    store.close()


@pytest.fixture
def pg_reference(pg_url: str) -> Iterator[Any]:
    """A second store on its own Postgres schema (the store's own write path)."""
    yield from _second_pg_store(pg_url)


def _second_pg_store(pg_url: str) -> Iterator[Any]:
    base, _, _query = pg_url.partition("?")
    schema = f"r_{int(time.time() * 1e6) % 10**12}_{random.randrange(10**6)}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    store = open_store(f"{base}?options=-csearch_path%3D{schema}")
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Any]:
    """A store on a SQLite file (the executemany path)."""
    store = open_store(f"sqlite:///{tmp_path}/batchor.db")
    yield store
    store.close()


def _new_items(n: int, texts: Sequence[str]) -> list[NewItem]:
    rng = random.Random(18)
    out = []
    for seq in range(1, n + 1):
        text = texts[seq % len(texts)]
        metadata = None if seq % 3 == 0 else json.dumps({"note": text}, ensure_ascii=False)
        out.append(
            NewItem(
                seq,
                f"{text[:40]}#{seq}",
                seq // 1000,
                rng.randrange(2**40),
                rng.randrange(1, 2**31),
                f"{rng.getrandbits(32):08x}",
                None if seq % 5 == 0 else rng.randrange(2**31),
                metadata,
            )
        )
    return out


def pending(new_items: Sequence[NewItem]) -> list[tuple[None, int, int]]:
    """`copy_items`'s placement of items that all go in pending."""
    return [(None, 0, len(new_items))]


def _start(store: Any, new_items: Sequence[NewItem], *, copy: bool = False) -> int:
    """A run holding ``new_items`` (through `pg_copy.copy_items` with ``copy``)."""
    record, _ = store.create_run("r", {"model": "m"}, "f" * 64)
    if copy:
        with store.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.pk == record.pk)
                .values(ingested_count=len(new_items), ingest_complete=True)
            )
            assert pg_copy.copy_items(conn, record.pk, new_items, pending(new_items)) == len(
                new_items
            )
    else:
        assert store.add_items(
            record.pk,
            new_items,
            next_slice=1,
            ingested_count=len(new_items),
            checkpoint=None,
            complete=True,
        )
    return int(record.pk)


ITEM_COLUMNS = [c for c in items.c if c.name != "run_pk"]
STATUS = [c.name for c in ITEM_COLUMNS].index("status")
ATTEMPTS = [c.name for c in ITEM_COLUMNS].index("attempts")
OUTPUT = [c.name for c in ITEM_COLUMNS].index("output_text")


_COMPLETION = ("attempts", "output_text", "input_tokens", "output_tokens", "done_tick")


def _item_rows(store: Any, run_pk: int) -> list[tuple[Any, ...]]:
    """Every column of the run's items as the item is: a completed one's row (left queued
    in its batch) overlaid with its completion."""
    names = [c.name for c in ITEM_COLUMNS]
    joined = items.outerjoin(
        completions,
        sa.and_(completions.c.run_pk == items.c.run_pk, completions.c.seq == items.c.seq),
    )
    stmt = (
        sa.select(*ITEM_COLUMNS, completions.c.seq, *(completions.c[n] for n in _COMPLETION))
        .select_from(joined)
        .where(items.c.run_pk == run_pk)
        .order_by(items.c.seq)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for r in rows:
        row = list(r[: len(names)])
        if r[len(names)] is not None:  # completed: its completion holds the outcome
            done = dict(zip(_COMPLETION, r[len(names) + 1 :], strict=True))
            for name in ("error_class", "error_message", "error_retryable", "error_attempt"):
                done[name] = None
            row = [done.get(n, v) for n, v in zip(names, row, strict=True)]
            row[STATUS] = "completed"
        out.append(tuple(row))
    return out


def _failure_rows(store: Any, run_pk: int) -> list[tuple[Any, ...]]:
    columns = [c for c in item_failures.c if c.name not in ("pk", "run_pk", "created_at")]
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(*columns).where(item_failures.c.run_pk == run_pk).order_by(item_failures.c.pk)
        ).all()
    return [tuple(r) for r in rows]


def test_copied_items_are_the_rows_executemany_writes(pg: Any, pg_reference: Any, lite: Any):
    new_items = _new_items(N_ITEMS, AWKWARD)
    copied = _item_rows(pg, _start(pg, new_items, copy=True))
    assert len(copied) == N_ITEMS
    assert copied == _item_rows(lite, _start(lite, new_items))
    assert copied == _item_rows(pg_reference, _start(pg_reference, new_items))


def test_copied_items_carry_text_only_postgres_escapes(pg: Any, pg_reference: Any):
    new_items = _new_items(300, AWKWARD + POSTGRES_ONLY)
    copied = _item_rows(pg, _start(pg, new_items, copy=True))
    assert copied == _item_rows(pg_reference, _start(pg_reference, new_items))
    ids = {row[1] for row in copied}
    assert {it.item_id for it in new_items} == ids
    assert any("\x00" in i for i in ids)
    assert any("\ud800" in i for i in ids)


def test_a_duplicate_item_id_fails_the_copy_and_its_transaction_leaves_nothing(pg: Any):
    new_items = _new_items(50, ["x"])
    run_pk = _start(pg, new_items[:10], copy=True)
    again = [it._replace(seq=it.seq + 100) for it in new_items[5:20]]  # ids 6..10 repeat
    with pytest.raises(sa.exc.IntegrityError), pg.engine.begin() as conn:
        pg_copy.copy_items(conn, run_pk, again, pending(again))
    assert len(_item_rows(pg, run_pk)) == 10


def test_copied_items_roll_back_with_their_transaction(pg: Any):
    run_pk = _start(pg, _new_items(10, ["x"]), copy=True)
    more = [it._replace(seq=it.seq + 10, item_id=f"more-{it.seq}") for it in _new_items(10, ["x"])]

    def ingest_then_die() -> None:
        with pg.engine.begin() as conn:
            pg_copy.copy_items(conn, run_pk, more, pending(more))
            raise RuntimeError("the ingesting worker dies before commit")

    with pytest.raises(RuntimeError):
        ingest_then_die()
    assert [row[0] for row in _item_rows(pg, run_pk)] == list(range(1, 11))


# ---- collection ----------------------------------------------------------------------


def _submitted_batch(store: Any, run_pk: int, seqs: Sequence[int]) -> int:
    number = store.allocate_batch_number(run_pk)
    record = store.record_batch(run_pk, f"r/{number:06d}", "in.jsonl", list(seqs), 1)
    assert record is not None
    assert store.mark_submitted(record.pk, "batch_1", "in_progress")
    return int(record.pk)


def _outcomes(seqs: Sequence[int], texts: Sequence[str]) -> list[ItemOutcome]:
    """Lines of every kind, with repeated lines for one item and lines for items that are
    not submitted in the batch, in a shuffled order."""
    rng = random.Random(7)
    out: list[ItemOutcome] = []
    for i, seq in enumerate(seqs):
        text = texts[i % len(texts)]
        tokens = (None, None) if i % 11 == 0 else (rng.randrange(10**6), rng.randrange(10**6))
        match i % 7:
            case 0 | 1 | 2 | 3:
                out.append(ItemOutcome(seq, "completed", text, None, None, False, *tokens))
            case 4:
                out.append(
                    ItemOutcome(seq, "retry", text, "schema_validation", text, True, *tokens)
                )
            case 5:
                out.append(ItemOutcome(seq, "retry", None, "server_error", None, True, *tokens))
            case _:
                error_class = None if i % 2 else ""  # recorded as "unknown" in both
                out.append(ItemOutcome(seq, "failed", None, error_class, text, False, *tokens))
        if i % 97 == 0:  # the same item answered twice: the first line of each kind applies
            out.append(ItemOutcome(seq, "failed", "again", "bad_request", "again", False))
        if i % 89 == 0:
            out.append(ItemOutcome(seq, "completed", "second", None, None, False, 1, 2))
    out.append(ItemOutcome(10**6, "completed", "no such item"))
    rng.shuffle(out)
    return out


def _apply_copy(
    store: Any, run_pk: int, batch_pk: int, chunk: Sequence[ItemOutcome], m: int
) -> int:
    with store.engine.begin() as conn:

        def take_tick() -> int:
            return int(
                conn.execute(
                    runs.update()
                    .where(runs.c.pk == run_pk)
                    .values(done_tick=runs.c.done_tick + 1)
                    .returning(runs.c.done_tick)
                ).scalar_one()
            )

        return pg_copy.apply_outcomes(
            conn, run_pk, batch_pk, chunk, max_attempts=m, take_tick=take_tick, now=time.time()
        )


def _collect(store: Any, outcomes: Sequence[ItemOutcome], max_attempts: int, *, copy: bool) -> Any:
    """A run of N_ITEMS whose items 1..N-200 are submitted in one batch, the outcomes applied
    in chunks of 1,000; the changed counts, item rows and failure rows."""
    run_pk = _start(store, _new_items(N_ITEMS, ["x"]))
    batch_pk = _submitted_batch(store, run_pk, range(1, N_ITEMS - 199))
    changed = []
    for start in range(0, len(outcomes), 1_000):
        chunk = outcomes[start : start + 1_000]
        if copy:
            changed.append(_apply_copy(store, run_pk, batch_pk, chunk, max_attempts))
        else:
            changed.append(store.apply_outcomes(run_pk, batch_pk, chunk, max_attempts))
    return changed, _item_rows(store, run_pk), _failure_rows(store, run_pk)


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_applied_outcomes_are_the_rows_executemany_writes(
    pg: Any, pg_reference: Any, lite: Any, max_attempts: int
):
    # Lines for every item, so some answer items that are pending (not in the batch).
    outcomes = _outcomes(range(1, N_ITEMS + 1), AWKWARD)
    copied = _collect(pg, outcomes, max_attempts, copy=True)
    changed, item_rows, failure_rows = copied
    assert sum(changed) == N_ITEMS - 200
    retried = [r for r in item_rows if r[STATUS] == "pending" and r[ATTEMPTS] == 1]
    assert {r[STATUS] for r in item_rows} == {"completed", "failed", "pending"}
    assert bool(retried) == (max_attempts > 1)
    assert failure_rows
    assert copied == _collect(lite, outcomes, max_attempts, copy=False)
    assert copied == _collect(pg_reference, outcomes, max_attempts, copy=False)


def test_applied_outcomes_carry_text_only_postgres_escapes(pg: Any, pg_reference: Any):
    outcomes = _outcomes(range(1, 500), POSTGRES_ONLY + AWKWARD[:3])
    copied = _collect(pg, outcomes, 3, copy=True)
    assert copied == _collect(pg_reference, outcomes, 3, copy=False)
    texts = {row[OUTPUT] for row in copied[1]}
    assert set(POSTGRES_ONLY) <= texts


def test_a_line_applied_twice_changes_nothing_the_second_time(pg: Any):
    run_pk = _start(pg, _new_items(100, ["x"]))
    batch_pk = _submitted_batch(pg, run_pk, range(1, 101))
    lines = _outcomes(range(1, 101), ["y"])
    first = _apply_copy(pg, run_pk, batch_pk, lines, 3)
    rows, failures = _item_rows(pg, run_pk), _failure_rows(pg, run_pk)
    assert first == 100
    assert _apply_copy(pg, run_pk, batch_pk, lines, 3) == 0
    assert (_item_rows(pg, run_pk), _failure_rows(pg, run_pk)) == (rows, failures)


@pytest.mark.parametrize(
    "bad",
    [
        ItemOutcome(7, "completed", "ok", None, None, False, 2**40, 1),  # beyond an integer
        ItemOutcome(7, "failed", None, "e" * 33, "class too long", False),
    ],
    ids=["token-count", "error-class"],
)
def test_a_value_the_items_cannot_hold_applies_nothing_of_the_chunk(pg: Any, bad: ItemOutcome):
    run_pk = _start(pg, _new_items(100, ["x"]))
    batch_pk = _submitted_batch(pg, run_pk, range(1, 101))
    before = _item_rows(pg, run_pk)
    lines = [*_outcomes(range(1, 51), ["y"]), bad]
    with pytest.raises(sa.exc.DataError):
        _apply_copy(pg, run_pk, batch_pk, lines, 3)
    assert _item_rows(pg, run_pk) == before
    assert _failure_rows(pg, run_pk) == []
    # The same chunk without the bad line applies (and the staging table is gone).
    assert _apply_copy(pg, run_pk, batch_pk, lines[:-1], 3) == 50


def test_two_chunks_in_one_transaction(pg: Any):
    run_pk = _start(pg, _new_items(100, ["x"]))
    batch_pk = _submitted_batch(pg, run_pk, range(1, 101))
    lines = [ItemOutcome(s, "completed", f"out {s}") for s in range(1, 101)]
    with pg.engine.begin() as conn:
        for chunk in (lines[:50], lines[50:]):
            assert (
                pg_copy.apply_outcomes(
                    conn, run_pk, batch_pk, chunk, max_attempts=3, take_tick=lambda: 1, now=0.0
                )
                == 50
            )
    assert {row[STATUS] for row in _item_rows(pg, run_pk)} == {"completed"}
    with pg.engine.begin() as conn:
        assert (
            pg_copy.apply_outcomes(
                conn, run_pk, batch_pk, [], max_attempts=3, take_tick=int, now=0.0
            )
            == 0
        )


# ---- claims --------------------------------------------------------------------------


def _ended_batches(store: Any, n: int) -> tuple[int, list[int]]:
    run_pk = _start(store, _new_items(n * 10, ["x"]))
    pks = [_submitted_batch(store, run_pk, range(i * 10 + 1, i * 10 + 11)) for i in range(n)]
    with store.engine.begin() as conn:
        conn.execute(batches.update().values(status=BatchStatus.ENDED.value))
    return run_pk, pks


def _locked(store: Any, sql: str) -> Any:
    """A connection whose open transaction holds the rows ``sql`` selects FOR UPDATE."""
    conn = store.engine.connect()
    conn.begin()
    conn.exec_driver_sql(sql)
    return conn


def _claim(
    store: Any, batch_pk: int, owner: str, *, now: float, holders: Sequence[str] = ()
) -> bool:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")  # waiting would fail the test
        return pg_copy.claim_batch(
            conn,
            batch_pk,
            BatchStatus.ENDED,
            owner,
            until=now + 60,
            now=now,
            holders=[owner, *holders],
        )


def test_a_claim_skips_a_batch_another_transaction_holds(pg: Any):
    _, (batch_pk,) = _ended_batches(pg, 1)
    now = time.time()
    holder = _locked(pg, f"SELECT pk FROM batchor_batches WHERE pk = {batch_pk} FOR UPDATE")
    try:
        started = time.monotonic()
        assert not _claim(pg, batch_pk, "w1", now=now)
        assert time.monotonic() - started < 2
    finally:
        holder.rollback()
        holder.close()
    assert _claim(pg, batch_pk, "w1", now=now)
    assert _claim(pg, batch_pk, "w1", now=now)  # renewal
    assert not _claim(pg, batch_pk, "w2", now=now)  # leased to w1
    assert _claim(pg, batch_pk, "w2", now=now, holders=["w1"])  # taken over from w1
    assert _claim(pg, batch_pk, "w3", now=now + 61)  # w2's lease expired
    assert pg.get_batch(batch_pk).claimed_by == "w3"


def test_workers_claim_different_ended_batches(pg: Any):
    run_pk, pks = _ended_batches(pg, 3)
    now = time.time()

    def claim_next(owner: str, at: float = now) -> int | None:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            return pg_copy.claim_next_ended(conn, run_pk, owner, until=at + 60, now=at)

    holder = _locked(pg, f"SELECT pk FROM batchor_batches WHERE pk = {pks[0]} FOR UPDATE")
    try:
        assert claim_next("w1") == pks[1]  # the first is locked: skipped, not waited for
    finally:
        holder.rollback()
        holder.close()
    assert claim_next("w2") == pks[0]
    assert claim_next("w1") == pks[1]  # its own claim again
    with pg.engine.begin() as conn:
        conn.execute(batches.update().where(batches.c.pk == pks[2]).values(not_before=now + 30))
    assert claim_next("w3") is None  # the last is not due yet
    assert claim_next("w3", now + 61) == pks[0]  # every lease expired


def test_packing_waits_for_a_row_another_transaction_changes_and_then_takes_nothing(pg: Any):
    # Packing is a plain UPDATE (one packer per run holds the packing lock): a row another
    # transaction holds is waited for, and once that transaction has moved the item out of
    # pending the batch is refused whole.
    run_pk = _start(pg, _new_items(100, ["x"]))
    holder = _locked(pg, "SELECT seq FROM batchor_items WHERE seq = 50 FOR UPDATE")
    made: list[Any] = []
    try:
        packer = threading.Thread(
            target=lambda: made.append(pg.record_batch(run_pk, "r/1", "in", list(range(1, 61)), 1))
        )
        packer.start()
        packer.join(0.5)
        assert packer.is_alive()  # waiting on the held row, not skipping it
        holder.exec_driver_sql("UPDATE batchor_items SET status = 'cancelled' WHERE seq = 50")
        holder.commit()
        packer.join(30)
    finally:
        holder.close()
    assert made == [None]
    statuses = [row[STATUS] for row in _item_rows(pg, run_pk)]
    assert statuses.count("pending") == 99
    assert pg.batches(run_pk, list(BatchStatus)) == []


def test_one_session_at_a_time_holds_a_runs_packing_lock(pg: Any):
    with pg.engine.connect() as first, pg.engine.connect() as second:
        assert pg_copy.try_lock_packing(first, 1)
        first.commit()  # the lock outlives the transaction it was taken in
        assert not pg_copy.try_lock_packing(second, 1)  # at once, without waiting
        assert pg_copy.try_lock_packing(second, 2)  # another run's lock is free
        pg_copy.unlock_packing(first, 1)
        assert pg_copy.try_lock_packing(second, 1)
        pg_copy.unlock_packing(second, 1)
        pg_copy.unlock_packing(second, 2)
        second.commit()
    with pg.engine.connect() as third:
        dead = pg.engine.connect()
        assert pg_copy.try_lock_packing(dead, 3)
        dead.invalidate()  # the worker's session ends (it died): the server frees its lock
        dead.close()
        deadline = time.monotonic() + 10  # the server notices the closed socket shortly
        while not pg_copy.try_lock_packing(third, 3):
            assert time.monotonic() < deadline
            third.rollback()
            time.sleep(0.05)
        pg_copy.unlock_packing(third, 3)


def _lock_waiter_on_runs(store: Any, timeout: float = 30) -> bool:
    """Whether some session is waiting on a lock in a statement on the runs table, within
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    sql = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query ILIKE :pattern"
    )
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            if conn.execute(sql, {"pattern": "%batchor_runs%"}).scalar():
                return True
        time.sleep(0.05)
    return False


def test_a_run_deleted_while_a_slice_is_ingested_keeps_none_of_its_items(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing but delete_run ties the items to their run (no foreign key): a slice whose
    # items are written, not yet committed, when the run is deleted must not outlive it.
    first = _new_items(10, ["x"])
    record, _ = pg.create_run("r", {"model": "m"}, "f" * 64)
    assert pg.add_items(
        record.pk, first[:5], next_slice=1, ingested_count=5, checkpoint=None, complete=False
    )
    copied, release = threading.Event(), threading.Event()
    real = pg_copy.copy_items

    def copy_then_wait(*args: Any) -> int:
        written = real(*args)
        copied.set()
        assert release.wait(30)
        return written

    monkeypatch.setattr(pg_copy, "copy_items", copy_then_wait)
    outcome: list[bool] = []
    ingesting = threading.Thread(
        target=lambda: outcome.append(
            pg.add_items(
                record.pk,
                first[5:],
                next_slice=2,
                ingested_count=10,
                checkpoint=None,
                complete=True,
            )
        )
    )
    ingesting.start()
    assert copied.wait(30)
    deleting = threading.Thread(target=pg.delete_run, args=(record.pk,))
    deleting.start()
    try:
        assert _lock_waiter_on_runs(pg)  # the delete waits for the slice's transaction
    finally:
        release.set()
    ingesting.join(30)
    deleting.join(30)
    assert outcome == [True]
    assert pg.get_run("r") is None
    with pg.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 0


@pytest.mark.parametrize("mover", ["take_over_stopped", "requeue_unanswered"])
def test_items_moved_out_of_a_batch_while_it_is_collected_keep_their_completions(
    pg: Any, monkeypatch: pytest.MonkeyPatch, mover: str
) -> None:
    # Taking a stopped batch's unanswered items out of it (or requeueing them, as a stale
    # collector would), while a collection of the batch has found which items still wait
    # but not yet written their completions: the move waits for it, so no item ends up both
    # completed and pending (to be sent again, and billed twice).
    run_pk = _start(pg, _new_items(10, ["x"]))
    batch_pk = _submitted_batch(pg, run_pk, range(1, 11))
    found, release = threading.Event(), threading.Event()
    real = pg_copy._waiting

    def find_then_wait(*args: Any) -> list[tuple[int, int]]:
        waiting = real(*args)
        found.set()
        assert release.wait(30)
        return waiting

    monkeypatch.setattr(pg_copy, "_waiting", find_then_wait)
    lines = [ItemOutcome(seq, "completed", "ok", None, None, False, 1, 1) for seq in range(1, 6)]
    changed: list[int] = []
    taken: list[int] = []
    collecting = threading.Thread(
        target=lambda: changed.append(pg.apply_outcomes(run_pk, batch_pk, lines, 3))
    )
    collecting.start()
    assert found.wait(30)

    def move() -> int:
        if mover == "take_over_stopped":
            return int(pg.take_over_stopped(run_pk, batch_pk))
        return int(pg.requeue_unanswered(run_pk, batch_pk, charge=None, max_attempts=3))

    taking = threading.Thread(target=lambda: taken.append(move()))
    taking.start()
    try:
        assert _lock_waiter_on_runs(pg)  # the move waits for the collection
    finally:
        release.set()
    collecting.join(30)
    taking.join(30)
    assert (changed, taken) == ([5], [5])
    rows = pg.item_rows(run_pk, 0, 20)
    assert [(r.seq, r.status.value) for r in rows] == [
        *((seq, "completed") for seq in range(1, 6)),
        *((seq, "pending") for seq in range(6, 11)),
    ]
