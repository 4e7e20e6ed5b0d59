"""The store's reading: counts by status, item rows by seq or by the order they ended, and
every terminal row streamed from one snapshot for exports."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import sqlalchemy as sa

from batchor.states import ItemStatus
from batchor.stores.records import ItemRow
from batchor.stores.schema import batches, completions, items, runs
from batchor.stores.sql.bulk import driver_cursor
from batchor.stores.sql.connector import SqlConnector
from batchor.stores.sql.rows import ITEM_ROW, item_row
from batchor.stores.sql.statements import SENT, held


class ReadOperations(SqlConnector):
    """Reading (results, summaries, exports)."""

    def item_counts(self, run_pk: int) -> dict[ItemStatus, int]:
        """Items by status (every status present), in one pass over the run's items (one
        statement, one snapshot). An item still queued in a batch the provider holds counts
        as ``submitted``, and one with a completion (Postgres) as ``completed``: its row is
        queued in the batch that answered it, which counts its completions."""
        # The run's sent batches as one IN list, read once per count (the correlated `held`
        # of `_effective_row` would probe the batches once per item).
        sent_batches = sa.select(batches.c.pk).where(
            batches.c.run_pk == run_pk, batches.c.status.in_(SENT)
        )

        def completed_in(*where: sa.ColumnElement[bool]) -> Any:
            return (
                sa.select(sa.func.coalesce(sa.func.sum(batches.c.completed), 0))
                .where(batches.c.run_pk == run_pk, *where)
                .scalar_subquery()
            )

        stmt = sa.select(
            *(sa.func.count().filter(items.c.status == s.value) for s in ItemStatus),
            sa.func.count().filter(
                sa.and_(items.c.status == _QUEUED, items.c.batch_pk.in_(sent_batches))
            ),
            completed_in(),
            completed_in(batches.c.status.in_(SENT)),
        ).where(items.c.run_pk == run_pk)
        with self._read() as conn:
            *by_row, queued_held, done, done_held = conn.execute(stmt).one()
        counts = dict(zip(ItemStatus, map(int, by_row), strict=True))
        queued_held, done, done_held = int(queued_held), int(done), int(done_held)
        counts[ItemStatus.COMPLETED] += done
        counts[ItemStatus.SUBMITTED] += queued_held - done_held
        counts[ItemStatus.QUEUED] -= queued_held + (done - done_held)
        return counts

    def run_of_provider_batch(self, provider_batch_id: str) -> str | None:
        """The id of the run that holds the provider batch ``provider_batch_id``, if any."""
        stmt = (
            sa.select(runs.c.run_id)
            .join(batches, batches.c.run_pk == runs.c.pk)
            .where(batches.c.provider_batch_id == provider_batch_id)
            .limit(1)
        )
        with self._read() as conn:
            return conn.execute(stmt).scalar()

    def batch_counts(self, run_pk: int) -> dict[str, int]:
        """Batches by status."""
        stmt = (
            sa.select(batches.c.status, sa.func.count())
            .where(batches.c.run_pk == run_pk)
            .group_by(batches.c.status)
        )
        with self._read() as conn:
            return {status: int(n) for status, n in conn.execute(stmt)}

    def item_rows(
        self,
        run_pk: int,
        after_seq: int,
        limit: int,
        statuses: Collection[ItemStatus] | None = None,
    ) -> list[ItemRow]:
        """Items in seq order after ``after_seq``, optionally only in ``statuses``."""
        stmt = (
            sa.select(*_EFFECTIVE_ROW)
            .select_from(_WITH_COMPLETION)
            .where(items.c.run_pk == run_pk, items.c.seq > after_seq)
        )
        if statuses is not None:
            stmt = stmt.where(_EFFECTIVE_ROW[2].in_([s.value for s in statuses]))
        stmt = stmt.order_by(items.c.seq).limit(limit)
        with self._read() as conn:
            return [item_row(r) for r in conn.execute(stmt).all()]

    def terminal_rows(self, run_pk: int, after: tuple[int, int], limit: int) -> list[ItemRow]:
        """Terminal items in the order they ended, ``(done_tick, seq)`` after ``after``: the
        items ended in their own rows and those with a completion, merged in one statement
        (one snapshot), each side read in that order from its index."""
        tick, seq = after

        def later(columns: tuple[sa.ColumnElement[int], sa.ColumnElement[int]]) -> Any:
            done_tick, item_seq = columns
            return sa.or_(done_tick > tick, sa.and_(done_tick == tick, item_seq > seq))

        ended = (
            sa.select(*ITEM_ROW)
            .where(
                items.c.run_pk == run_pk,
                items.c.done_tick.is_not(None),
                later((items.c.done_tick, items.c.seq)),
            )
            .order_by(items.c.done_tick, items.c.seq)
            .limit(limit)
            .subquery()
        )
        completed = (
            sa.select(*_COMPLETED_ROW)
            .select_from(_COMPLETED_ITEMS)
            .where(
                completions.c.run_pk == run_pk,
                later((completions.c.done_tick, completions.c.seq)),
            )
            .order_by(completions.c.done_tick, completions.c.seq)
            .limit(limit)
            .subquery()
        )
        both = sa.union_all(sa.select(ended), sa.select(completed)).subquery()
        stmt = sa.select(both).order_by(both.c[12], both.c[0]).limit(limit)
        with self._read() as conn:
            return [item_row(r) for r in conn.execute(stmt).all()]

    def stream_terminal_rows(self, run_pk: int, page: int) -> Iterator[list[ItemRow]]:
        """Every terminal item in seq order, in pages, read from one snapshot (for exports:
        one query, no per-page round trip). The rows come straight from the driver's cursor,
        which streams them (SQLite) or is a server-side cursor (Postgres)."""
        stmt = (
            sa.select(*_EFFECTIVE_ROW)
            .select_from(_WITH_COMPLETION)
            .where(
                items.c.run_pk == run_pk,
                sa.or_(items.c.done_tick.is_not(None), completions.c.seq.is_not(None)),
            )
            .order_by(items.c.seq)
        )
        with self._read() as conn:
            cursor = driver_cursor(conn, stmt)
            try:
                while rows := cursor.fetchmany(page):
                    yield [item_row(r) for r in rows]
            finally:
                cursor.close()


_QUEUED = ItemStatus.QUEUED.value
_SUBMITTED = ItemStatus.SUBMITTED.value

_WITH_COMPLETION = items.outerjoin(
    completions,
    sa.and_(completions.c.run_pk == items.c.run_pk, completions.c.seq == items.c.seq),
)
_COMPLETED_ITEMS = completions.join(
    items, sa.and_(items.c.run_pk == completions.c.run_pk, items.c.seq == completions.c.seq)
)
_COMPLETED_ROW = (
    items.c.seq,
    items.c.item_id,
    sa.literal(ItemStatus.COMPLETED.value, sa.String).label("status"),
    completions.c.attempts,
    items.c.metadata,
    completions.c.output_text,
    *(
        sa.cast(sa.null(), column.type).label(column.name)
        for column in (
            items.c.error_class,
            items.c.error_message,
            items.c.error_retryable,
            items.c.error_attempt,
        )
    ),
    completions.c.input_tokens,
    completions.c.output_tokens,
    completions.c.done_tick,
)
"""`ITEM_ROW` of an item with a completion (from the completion and the item's own row)."""


def _effective_row() -> tuple[sa.ColumnElement[Any], ...]:
    """`ITEM_ROW` over ``_WITH_COMPLETION``: an item's completion where it has one, else its
    own row, with its status as users see it."""
    done = completions.c.seq.is_not(None)
    sent = sa.and_(items.c.status == _QUEUED, held())
    status = sa.case(
        (done, sa.literal(ItemStatus.COMPLETED.value)),
        (sent, sa.literal(_SUBMITTED)),
        else_=items.c.status,
    )
    picked = [
        sa.case((done, mine), else_=theirs)
        for mine, theirs in zip(_COMPLETED_ROW[3:], ITEM_ROW[3:], strict=True)
    ]
    return (ITEM_ROW[0], ITEM_ROW[1], status, *picked)


_EFFECTIVE_ROW = _effective_row()
