"""The store's reading: counts by status, item rows by seq or by the order they ended, and
every terminal row streamed from one snapshot for exports."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import sqlalchemy as sa

from batchor.states import ItemStatus
from batchor.stores.records import ItemRow
from batchor.stores.schema import batches, items, runs
from batchor.stores.sql.bulk import driver_cursor
from batchor.stores.sql.connector import SqlConnector
from batchor.stores.sql.rows import ITEM_ROW, item_row
from batchor.stores.sql.statements import SENT, held


class ReadOperations(SqlConnector):
    """Reading (results, summaries, exports)."""

    def item_counts(self, run_pk: int) -> dict[ItemStatus, int]:
        """Items by status (every status present). An item queued in a batch the provider
        holds counts as ``submitted``: creating a batch rewrites its row, not its items'."""
        counts = dict.fromkeys(ItemStatus, 0)
        stmt = (
            sa.select(items.c.status, items.c.batch_pk, sa.func.count())
            .where(items.c.run_pk == run_pk)
            .group_by(items.c.status, items.c.batch_pk)
        )
        sent = sa.select(batches.c.pk).where(batches.c.run_pk == run_pk, batches.c.status.in_(SENT))
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            held = set(conn.execute(sent).scalars())
        for status, batch_pk, n in rows:
            if status == _QUEUED and batch_pk in held:
                status = _SUBMITTED
            counts[ItemStatus(status)] += int(n)
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
        status = _status_read()
        stmt = sa.select(*ITEM_ROW[:2], status, *ITEM_ROW[3:]).where(
            items.c.run_pk == run_pk, items.c.seq > after_seq
        )
        if statuses is not None:
            stmt = stmt.where(status.in_([s.value for s in statuses]))
        stmt = stmt.order_by(items.c.seq).limit(limit)
        with self._read() as conn:
            return [item_row(r) for r in conn.execute(stmt).all()]

    def terminal_rows(self, run_pk: int, after: tuple[int, int], limit: int) -> list[ItemRow]:
        """Terminal items in the order they ended, ``(done_tick, seq)`` after ``after``."""
        tick, seq = after
        stmt = (
            sa.select(*ITEM_ROW)
            .where(
                items.c.run_pk == run_pk,
                items.c.done_tick.is_not(None),
                sa.or_(
                    items.c.done_tick > tick,
                    sa.and_(items.c.done_tick == tick, items.c.seq > seq),
                ),
            )
            .order_by(items.c.done_tick, items.c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            return [item_row(r) for r in conn.execute(stmt).all()]

    def stream_terminal_rows(self, run_pk: int, page: int) -> Iterator[list[ItemRow]]:
        """Every terminal item in seq order, in pages, read from one snapshot (for exports:
        one query, no per-page round trip). The rows come straight from the driver's cursor,
        which streams them (SQLite) or is a server-side cursor (Postgres)."""
        stmt = (
            sa.select(*ITEM_ROW)
            .where(items.c.run_pk == run_pk, items.c.done_tick.is_not(None))
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


def _status_read() -> sa.ColumnElement[str]:
    """An item's status as users see it: ``submitted`` while it is queued in a batch the
    provider holds (the row keeps ``queued``: see `ReadOperations.item_counts`)."""
    return sa.case(
        (sa.and_(items.c.status == _QUEUED, held()), sa.literal(_SUBMITTED)),
        else_=items.c.status,
    )
