"""The store's side of deadlines and batch timeouts: the one claim that lets exactly one
worker cancel a provider batch batchor stops, the items a passed deadline ends (``failed``,
class ``deadline``, no attempt charged), and the figures a run's summary reports of them."""

from __future__ import annotations

import sqlalchemy as sa

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import BATCH_TIMEOUT, DEADLINE
from batchor.stores.schema import batches, items
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.failures import record_failures
from batchor.stores.sql.statements import awaiting, next_tick, release


class StopOperations(SqlConnector):
    """Stops (deadlines and batch timeouts)."""

    def claim_stop(self, batch_pk: int, reason: str, at: float) -> bool:
        """Claim the cancel of a ``submitted`` batch batchor stops (``reason``:
        ``batch_timeout`` or ``deadline``): a compare-and-set on "no stop recorded yet", so
        of any number of workers exactly one gets True and sends the cancel."""
        stmt = (
            batches.update()
            .where(
                batches.c.pk == batch_pk,
                batches.c.status == BatchStatus.SUBMITTED.value,
                batches.c.stop_reason.is_(None),
            )
            .values(stop_reason=reason, stop_requested_at=at, updated_at=now())
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def retry_stop(self, batch_pk: int, seen: float, at: float) -> bool:
        """Claim sending a stopped batch's cancel again (the first call failed, or its
        sender died before it was sent): True for exactly one caller, if the batch is still
        ``submitted`` and its stop was last claimed at ``seen``."""
        stmt = (
            batches.update()
            .where(
                batches.c.pk == batch_pk,
                batches.c.status == BatchStatus.SUBMITTED.value,
                batches.c.stop_requested_at == seen,
            )
            .values(stop_requested_at=at, updated_at=now())
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def fail_open(self, run_pk: int, message: str, *, batch_pk: int | None = None) -> int:
        """End items the run's deadline leaves unsent: ``failed`` with class ``deadline``,
        not retryable, no attempt charged (the attempt recorded is the one it would have
        been). Without ``batch_pk``, the run's ``pending`` items; with it, the batch's
        unanswered ones (``submitted``, or ``queued`` in a batch never created). Returns how
        many ended."""
        where: tuple[sa.ColumnElement[bool], ...]
        if batch_pk is None:
            where = (items.c.run_pk == run_pk, items.c.status == ItemStatus.PENDING.value)
        else:
            where = (items.c.batch_pk == batch_pk, awaiting())
        with self._write() as conn:
            return _fail(conn, run_pk, where, message, with_batch=batch_pk is not None)

    def drop_unsent(
        self,
        batch_pk: int,
        expected: BatchStatus,
        create_started_at: float | None,
        message: str,
    ) -> bool:
        """End a batch never created at the provider once the run's deadline has passed:
        collected (provider status ``not_sent``), its queued items failed ``deadline``, its
        token reservation released, in one transaction; False if it is no longer
        ``expected`` or its create claim changed from ``create_started_at`` meanwhile (a
        worker claimed its create: it is stopped once created instead)."""
        claim = batches.c.create_started_at
        started = claim.is_(None) if create_started_at is None else claim == create_started_at
        with self._write() as conn:
            row = conn.execute(
                batches.update()
                .where(batches.c.pk == batch_pk, batches.c.status == expected.value, started)
                .values(
                    status=BatchStatus.COLLECTED.value,
                    provider_status="not_sent",
                    stop_reason=DEADLINE,
                    updated_at=now(),
                )
                .returning(batches.c.run_pk)
            ).first()
            if row is None:
                return False
            release(conn, batch_pk)
            where = (items.c.batch_pk == batch_pk, items.c.status == ItemStatus.QUEUED.value)
            _fail(conn, row.run_pk, where, message, with_batch=True)
        return True

    def stop_counts(self, run_pk: int, *, deadline_items: bool) -> tuple[int, int, int]:
        """``(deadline_failed, timed_out_batches, timeout_requeued)`` in one query: items
        failed ``deadline`` (counted only with ``deadline_items``, i.e. once the run's
        deadline has passed: none can be before), batches stopped for ``batch_timeout``,
        and the unanswered items those batches handed back to be sent again."""
        timed_out = sa.and_(batches.c.run_pk == run_pk, batches.c.stop_reason == BATCH_TIMEOUT)
        failed: sa.ColumnElement[int] = (
            sa.select(sa.func.count())
            .where(
                items.c.run_pk == run_pk,
                items.c.status == ItemStatus.FAILED.value,
                items.c.error_class == DEADLINE,
            )
            .scalar_subquery()
            if deadline_items
            else sa.literal(0)
        )
        stmt = sa.select(
            failed,
            sa.select(sa.func.count()).where(timed_out).scalar_subquery(),
            sa.select(sa.func.coalesce(sa.func.sum(batches.c.requeued), 0))
            .where(timed_out)
            .scalar_subquery(),
        )
        with self._read() as conn:
            row = conn.execute(stmt).one()
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)


def _fail(
    conn: sa.Connection,
    run_pk: int,
    where: tuple[sa.ColumnElement[bool], ...],
    message: str,
    *,
    with_batch: bool,
) -> int:
    """Fail the items matching ``where`` as ``deadline`` (recorded for audit first); with
    none, nothing is written (a step after the deadline finds none most of the time)."""
    if conn.execute(sa.select(items.c.seq).where(*where).limit(1)).first() is None:
        return 0
    at = now()
    tick = next_tick(conn, run_pk)
    record_failures(
        conn,
        where,
        error_class=DEADLINE,
        message=message,
        retryable=False,
        created_at=at,
        with_batch=with_batch,
    )
    return int(
        conn.execute(
            items.update()
            .where(*where)
            .values(
                status=ItemStatus.FAILED.value,
                done_tick=tick,
                error_class=DEADLINE,
                error_message=message,
                error_retryable=False,
                error_attempt=items.c.attempts + 1,
            )
        ).rowcount
    )
