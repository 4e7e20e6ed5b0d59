"""The statements the store runs by the hundred thousand, compiled once at import, and the
small statements several transactions share (the done tick, the token budget)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.records import ItemOutcome, NewItem
from batchor.stores.schema import batches, completions, items, runs, token_budget
from batchor.stores.sql.failures import failures_from

CHUNK = 900
"""Bound parameters per IN (...) list, under every backend's limit."""


def const(value: str | int) -> Any:
    """A fixed value written into the SQL text rather than bound: rows of a bulk statement
    then carry only their own values. Only for batchor's own constants (statuses, kinds)."""
    if isinstance(value, int):
        return sa.literal_column(str(value), sa.Integer)
    quoted = value.replace("'", "''")
    return sa.literal_column(f"'{quoted}'", sa.String)


# New items: a NewItem's fields in order (the run, status and attempts are constants).
ITEM_INSERT_KEYS = NewItem._fields


def insert_items(run_pk: int, batch_pk: int | None) -> Any:
    """New items of the run ``run_pk``, pending, or born queued in the forming batch
    ``batch_pk``: the run and batch written into the statement, so each `NewItem` reaches
    the driver as it is (no tuple is built per row)."""
    if batch_pk is None:
        fixed = {"status": const(ItemStatus.PENDING.value)}
    else:
        fixed = {"status": const(ItemStatus.QUEUED.value), "batch_pk": const(batch_pk)}
    return items.insert().inline().values(run_pk=const(run_pk), attempts=const(0), **fixed)


def insert_items_json(run_pk: int, batch_pk: int | None) -> str:
    """SQLite: the new items of `insert_items` from one parameter, a JSON array of
    `NewItem`s. The whole slice goes in with one statement that runs inside SQLite, without
    the interpreter (which `executemany` takes back for every row): about 15 % less time,
    and the interpreter is free meanwhile."""
    status = ItemStatus.PENDING if batch_pk is None else ItemStatus.QUEUED
    fixed = {"run_pk": str(run_pk), "status": f"'{status.value}'", "attempts": "0"}
    if batch_pk is not None:
        fixed["batch_pk"] = str(batch_pk)
    fields = {name: f"json_extract(value, '$[{i}]')" for i, name in enumerate(NewItem._fields)}
    columns = {**fixed, **fields}
    return (
        f"INSERT INTO {items.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns.values())} FROM json_each(?)"
    )


# Pending items of a run with seq in [b_first, b_last] -> queued in a batch.
QUEUE_RANGE = (
    items.update()
    .where(
        items.c.run_pk == sa.bindparam("b_run_pk"),
        items.c.seq.between(sa.bindparam("b_first"), sa.bindparam("b_last")),
        items.c.status == const(ItemStatus.PENDING.value),
    )
    .values(status=const(ItemStatus.QUEUED.value), batch_pk=sa.bindparam("b_batch_pk"))
)
QUEUE_RANGE_KEYS = ("b_run_pk", "b_batch_pk", "b_first", "b_last")

# An item in a batch keeps the row status ``queued`` once the batch is created (the batch's
# status says it was sent: see `ReadOperations.item_counts`); items sent synchronously (in no
# batch) are ``submitted``.
AWAITING = (ItemStatus.QUEUED.value, ItemStatus.SUBMITTED.value)
"""Row statuses of an item waiting for its answer (or for its batch to be sent)."""
SENT = (BatchStatus.SUBMITTED.value, BatchStatus.ENDED.value)
"""Batch statuses whose queued items the provider holds: read as ``submitted``."""


def held() -> sa.Exists:
    """The item's batch is one the provider holds (``SENT``): its queued item was sent."""
    return (
        sa.select(batches.c.pk)
        .where(batches.c.pk == items.c.batch_pk, batches.c.status.in_([const(s) for s in SENT]))
        .exists()
    )


def answered() -> sa.Exists:
    """The item has a row in ``batchor_completions``: it is completed, whatever its own row
    says (``queued`` in the batch that answered it)."""
    return (
        sa.select(completions.c.seq)
        .where(completions.c.run_pk == items.c.run_pk, completions.c.seq == items.c.seq)
        .exists()
    )


def awaiting() -> sa.ColumnElement[bool]:
    """The item still waits for an answer: ``AWAITING`` in its row, and not completed. Every
    statement that moves items out of a batch or ends them is guarded by this."""
    return sa.and_(items.c.status.in_(AWAITING), ~answered())


# The item still waits in its batch (statuses written into the SQL, unlike `awaiting`).
_STILL_AWAITING = (items.c.status.in_([const(s) for s in AWAITING]), ~answered())
_IN_BATCH = (
    items.c.run_pk == sa.bindparam("b_run_pk"),
    items.c.seq == sa.bindparam("b_seq"),
    items.c.batch_pk == sa.bindparam("b_batch_pk"),
    *_STILL_AWAITING,
)
_KIND = sa.bindparam("b_kind", type_=sa.String)
_NEXT_ATTEMPT = items.c.attempts + const(1)
_RETRIES = sa.and_(_KIND == const("retry"), _NEXT_ATTEMPT < sa.bindparam("b_max", type_=sa.Integer))
# One failed or retried line applied to its item, guarded so a line applies at most once
# (completed lines take `APPLY_COMPLETED`).
APPLY_OUTCOME = (
    items.update()
    .where(*_IN_BATCH)
    .values(
        status=sa.case(
            (_RETRIES, const(ItemStatus.PENDING.value)), else_=const(ItemStatus.FAILED.value)
        ),
        attempts=_NEXT_ATTEMPT,
        output_text=sa.bindparam("b_output_text", type_=sa.Text),
        error_class=sa.bindparam("b_error_class", type_=sa.String),
        error_message=sa.bindparam("b_error_message", type_=sa.Text),
        error_retryable=sa.bindparam("b_error_retryable", type_=sa.Boolean),
        error_attempt=_NEXT_ATTEMPT,
        input_tokens=sa.bindparam("b_input_tokens", type_=sa.Integer),
        output_tokens=sa.bindparam("b_output_tokens", type_=sa.Integer),
        done_tick=sa.case((_RETRIES, sa.null()), else_=sa.bindparam("b_tick", type_=sa.Integer)),
    )
)
APPLY_OUTCOME_KEYS = (
    "b_run_pk",
    "b_seq",
    "b_batch_pk",
    "b_kind",
    "b_max",
    "b_output_text",
    "b_error_class",
    "b_error_message",
    "b_error_retryable",
    "b_input_tokens",
    "b_output_tokens",
    "b_tick",
)


# A completed line (nearly every line): no CASEs, the run, batch and tick written into the
# statement, and each `ItemOutcome` handed to the driver as it is (`OUTCOME_KEYS`), for
# about 40 % less time per row than the general statement above. On SQLite the item's row
# takes the completion in place (cheaper there than appending it: a row is updated where it
# lies); Postgres appends it to batchor_completions (`postgres.apply_outcomes`), and readers
# take it from either.
def apply_completed(run_pk: int, batch_pk: int, tick: int) -> Any:
    """Completed lines of the batch ``batch_pk`` applied to their items, under the guard of
    `APPLY_OUTCOME`; rows are `ItemOutcome`s (keys `OUTCOME_KEYS`)."""
    return (
        items.update()
        .where(
            items.c.run_pk == const(run_pk),
            items.c.seq == sa.bindparam("b_seq"),
            items.c.batch_pk == const(batch_pk),
            *_STILL_AWAITING,
        )
        .values(
            status=const(ItemStatus.COMPLETED.value),
            attempts=_NEXT_ATTEMPT,
            output_text=sa.bindparam("b_output_text", type_=sa.Text),
            error_class=sa.null(),
            error_message=sa.null(),
            error_retryable=sa.null(),
            error_attempt=sa.null(),
            input_tokens=sa.bindparam("b_input_tokens", type_=sa.Integer),
            output_tokens=sa.bindparam("b_output_tokens", type_=sa.Integer),
            done_tick=const(tick),
        )
    )


# An `ItemOutcome`'s fields as bind parameter names.
OUTCOME_KEYS = tuple(f"b_{field}" for field in ItemOutcome._fields)
# The failed attempt of one line, recorded for audit under the same guard.
RECORD_LINE_FAILURE = failures_from(
    _IN_BATCH,
    error_class=sa.bindparam("f_error_class", type_=sa.String),
    message=sa.bindparam("f_message", type_=sa.Text),
    retryable=sa.bindparam("f_retryable", type_=sa.Boolean),
    created_at=sa.bindparam("f_now", type_=sa.Float),
)
RECORD_LINE_FAILURE_KEYS = (
    "b_run_pk",
    "b_seq",
    "b_batch_pk",
    "f_error_class",
    "f_message",
    "f_retryable",
    "f_now",
)


def lock_run(conn: Connection, run_pk: int) -> None:
    """Lock the run's row until the transaction ends (a no-op on SQLite, whose writers take
    turns anyway). Whatever changes the run's items without bumping its done tick (which
    locks the row too) and could meet a collection of the same items takes it first: the
    two then take turns, each seeing what the other committed."""
    conn.execute(sa.select(runs.c.pk).where(runs.c.pk == run_pk).with_for_update())


def next_tick(conn: Connection, run_pk: int) -> int:
    """Bump the run's done tick and return it. The row stays locked until the transaction
    commits, so ticks become visible in the order they were taken."""
    return int(
        conn.execute(
            runs.update()
            .where(runs.c.pk == run_pk)
            .values(done_tick=runs.c.done_tick + 1)
            .returning(runs.c.done_tick)
        ).scalar_one()
    )


def count_completed(conn: Connection, batch_pk: int, added: int) -> None:
    """Add to the batch's count of completed items the completions just appended (the item
    counts read it instead of counting batchor_completions)."""
    if added:
        conn.execute(
            batches.update()
            .where(batches.c.pk == batch_pk)
            .values(completed=batches.c.completed + added)
        )


def release(conn: Connection, batch_pk: int) -> None:
    """Give a batch's reserved tokens back to its budget (once: reserved is cleared)."""
    batch = conn.execute(
        batches.update()
        .where(batches.c.pk == batch_pk, batches.c.reserved.is_(True))
        .values(reserved=False)
        .returning(batches.c.est_tokens, batches.c.quota_scope)
    ).first()
    if batch is None:
        return
    conn.execute(
        token_budget.update()
        .where(token_budget.c.scope == (batch.quota_scope or ""))
        .values(in_flight=token_budget.c.in_flight - int(batch.est_tokens or 0))
    )


def insert_budget_row(dialect: str) -> Any:
    """INSERT a zero budget row for :scope unless one exists (both backends' ON CONFLICT)."""
    values = {"scope": sa.bindparam("scope"), "in_flight": 0}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(token_budget).values(values).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(token_budget).values(values).on_conflict_do_nothing()
