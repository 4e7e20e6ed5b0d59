"""The store's batch transitions: each one conditional statement (compare-and-set on the
batch's status, and on its create claim where two workers may race), True if it won."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.records import BatchError, BatchRecord
from batchor.stores.schema import batches, items, token_budget
from batchor.stores.sql import postgres
from batchor.stores.sql.bulk import is_postgres
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.rows import batch_record, errors_text
from batchor.stores.sql.statements import insert_budget_row, next_tick, release

_SENDABLE = (BatchStatus.PREPARED, BatchStatus.UPLOADED)


class _Conflict(Exception):
    """Raised inside a transaction to roll it back when a compare-and-set lost."""


class BatchOperations(SqlConnector):
    """Batches: reading them, and every transition submission, polling and claims make."""

    def batches(self, run_pk: int, statuses: Collection[BatchStatus]) -> list[BatchRecord]:
        """The run's batches in those statuses, oldest first."""
        stmt = (
            sa.select(batches)
            .where(batches.c.run_pk == run_pk, batches.c.status.in_([s.value for s in statuses]))
            .order_by(batches.c.pk)
        )
        with self._read() as conn:
            return [batch_record(row) for row in conn.execute(stmt)]

    def get_batch(self, batch_pk: int) -> BatchRecord | None:
        """The batch with that primary key, or ``None``."""
        with self._read() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.pk == batch_pk)).first()
        return None if row is None else batch_record(row)

    # ---- submission ---------------------------------------------------------------------
    def record_upload(self, batch_pk: int, file_id: str) -> bool:
        """Record the uploaded input file: ``prepared`` -> ``uploaded``, no longer held by
        its packer."""
        return self._move(
            batch_pk, [BatchStatus.PREPARED], (), status=_UPLOADED, file_id=file_id, **_UNHELD
        )

    def claim_create(self, batch_pk: int, owner: str, *, seen: float | None, at: float) -> bool:
        """Claim the create of an ``uploaded`` batch for ``owner``, starting ``at``, if its
        create claim is still the one seen (``None``: no create started)."""
        return self._move(
            batch_pk,
            [BatchStatus.UPLOADED],
            (_started_is(seen),),
            create_started_at=at,
            claimed_by=owner,
        )

    def claim_adoption(
        self, batch_pk: int, expected: BatchStatus, owner: str, file_id: str | None, *, at: float
    ) -> bool:
        """Claim a batch found at the provider, as a create would: a batch in ``expected``
        with no create started becomes ``uploaded`` with that input file and a claim
        started ``at``."""
        return self._move(
            batch_pk,
            [expected],
            (_started_is(None),),
            status=_UPLOADED,
            file_id=file_id,
            create_started_at=at,
            claimed_by=owner,
            lease_until=None,
        )

    def postpone(
        self, batch_pk: int, expected: BatchStatus, *, failures: int, not_before: float
    ) -> bool:
        """Leave a batch in ``expected`` after a transient failure, not to be tried again
        before ``not_before``."""
        return self._move(batch_pk, [expected], (), failures=failures, not_before=not_before)

    def reject(self, batch_pk: int, expected: BatchStatus, error: BatchError) -> bool:
        """End a batch the provider refused (``expected`` -> ``ended``, ``rejected``)."""
        return self._move(
            batch_pk,
            [expected],
            (),
            status=BatchStatus.ENDED.value,
            provider_status="rejected",
            errors=errors_text([error]),
            lease_until=None,  # a packer's hold would keep collectors off it
        )

    def mark_submitted(self, batch_pk: int, provider_batch_id: str, provider_status: str) -> bool:
        """Record the provider batch id: the batch becomes ``submitted``, and so, as read
        through it, do its queued items (their rows are not rewritten: see `item_counts`)."""
        return self._move(
            batch_pk,
            _SENDABLE,
            (),
            status=BatchStatus.SUBMITTED.value,
            provider_batch_id=provider_batch_id,
            provider_status=provider_status,
            failures=0,
            not_before=None,
            submitted_at=now(),
            lease_until=None,
        )

    def drop_batch(
        self, batch_pk: int, expected: BatchStatus, create_started_at: float | None
    ) -> bool:
        """End a never-created batch: collected, queued items cancelled, tokens released;
        False if it is no longer ``expected`` or its create claim changed meanwhile."""
        with self._write() as conn:
            row = conn.execute(
                _transition(
                    batch_pk,
                    [expected],
                    (_started_is(create_started_at),),
                    status=BatchStatus.COLLECTED.value,
                    provider_status="not_sent",
                ).returning(batches.c.run_pk)
            ).first()
            if row is None:
                return False
            release(conn, batch_pk)
            conn.execute(
                items.update()
                .where(items.c.batch_pk == batch_pk, items.c.status == ItemStatus.QUEUED.value)
                .values(status=ItemStatus.CANCELLED.value, done_tick=next_tick(conn, row.run_pk))
            )
        return True

    def reserve_tokens(self, batch_pk: int, limit: int) -> bool:
        """Reserve the batch's estimated tokens in its scope's budget if they fit (a batch
        reserves at most once); True if the batch holds a reservation."""
        try:
            with self._write() as conn:
                # Mark it reserved first (compare-and-set): of two workers reserving the same
                # batch, only one counts its tokens.
                batch = conn.execute(
                    batches.update()
                    .where(batches.c.pk == batch_pk, batches.c.reserved.is_(False))
                    .values(reserved=True)
                    .returning(batches.c.est_tokens, batches.c.quota_scope)
                ).first()
                if batch is None:
                    return True  # already reserved
                scope, tokens = batch.quota_scope or "", int(batch.est_tokens or 0)
                conn.execute(insert_budget_row(conn.dialect.name), {"scope": scope})
                room = conn.execute(
                    token_budget.update()
                    .where(
                        token_budget.c.scope == scope,
                        token_budget.c.in_flight + tokens <= limit,
                    )
                    .values(in_flight=token_budget.c.in_flight + tokens)
                ).rowcount
                if room != 1:
                    raise _Conflict  # no room: roll the reservation mark back
        except _Conflict:
            return False
        return True

    # ---- polling ------------------------------------------------------------------------
    def record_provider_status(self, batch_pk: int, provider_status: str) -> bool:
        """Record a ``submitted`` batch's provider status (still running)."""
        return self._move(batch_pk, [BatchStatus.SUBMITTED], (), provider_status=provider_status)

    def mark_ended(
        self,
        batch_pk: int,
        provider_status: str,
        *,
        output_file_id: str | None,
        error_file_id: str | None,
        errors: Sequence[BatchError] = (),
    ) -> bool:
        """Record that the provider ended a ``submitted`` batch (-> ``ended``)."""
        return self._move(
            batch_pk,
            [BatchStatus.SUBMITTED],
            (),
            status=BatchStatus.ENDED.value,
            provider_status=provider_status,
            output_file_id=output_file_id,
            error_file_id=error_file_id,
            errors=errors_text(errors),
        )

    # ---- claims -------------------------------------------------------------------------
    def claim_batch(
        self,
        batch_pk: int,
        expected: BatchStatus,
        owner: str,
        lease_seconds: float,
        *,
        steal_from: str | None = None,
    ) -> bool:
        """Claim (or renew) the batch for ``owner`` until ``lease_seconds`` from now, if it
        is in ``expected`` and unclaimed, expired, already ``owner``'s or ``steal_from``'s."""
        at = now()
        holders = [owner] if steal_from is None else [owner, steal_from]
        with self._write() as conn:
            if is_postgres(conn):  # skips a row another transaction holds, never waits
                return postgres.claim_batch(
                    conn,
                    batch_pk,
                    expected,
                    owner,
                    until=at + lease_seconds,
                    now=at,
                    holders=holders,
                )
            free = sa.or_(
                batches.c.lease_until.is_(None),
                batches.c.lease_until < at,
                batches.c.claimed_by.in_(holders),
            )
            stmt = (
                batches.update()
                .where(batches.c.pk == batch_pk, batches.c.status == expected.value, free)
                .values(claimed_by=owner, lease_until=at + lease_seconds)
            )
            return conn.execute(stmt).rowcount == 1

    def _move(
        self,
        batch_pk: int,
        expected: Sequence[BatchStatus],
        where: Sequence[sa.ColumnElement[bool]],
        **values: Any,
    ) -> bool:
        with self._write() as conn:
            return _moved(conn, batch_pk, expected, where, **values)


_UPLOADED = BatchStatus.UPLOADED.value
#: A packed batch's packer no longer holds it for its upload (`engine.claims.held_elsewhere`).
_UNHELD = {"claimed_by": None, "lease_until": None}


def _transition(
    batch_pk: int,
    expected: Sequence[BatchStatus],
    where: Sequence[sa.ColumnElement[bool]],
    **values: Any,
) -> sa.Update:
    """UPDATE the batch if it is in ``expected`` (and matches ``where``); the one shape of
    every batch transition above (private: each names the columns it sets)."""
    return (
        batches.update()
        .where(
            batches.c.pk == batch_pk,
            batches.c.status.in_([s.value for s in expected]),
            *where,
        )
        .values(updated_at=now(), **values)
    )


def _moved(
    conn: sa.Connection,
    batch_pk: int,
    expected: Sequence[BatchStatus],
    where: Sequence[sa.ColumnElement[bool]],
    **values: Any,
) -> bool:
    return conn.execute(_transition(batch_pk, expected, where, **values)).rowcount == 1


def _started_is(seen: float | None) -> sa.ColumnElement[bool]:
    """The batch's create claim is the one seen (``None``: no create started)."""
    column = batches.c.create_started_at
    return column.is_(None) if seen is None else column == seen
