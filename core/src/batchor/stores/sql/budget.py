"""The store's side of the spending cap: a batch's projected cost reserved under its run's
cap, one run at a time, so that two workers can never both pass it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from batchor.stores.schema import batches, runs
from batchor.stores.sql.connector import SqlConnector

#: The provider status of a batch that was ended without ever being created.
NOT_SENT = "not_sent"
# Float sums of many small costs drift in the last digits: a projection that fits the cap
# to within this fraction of it fits.
_ROUNDING = 1e-9


def committed_cost_sql(run_pk: int) -> sa.Select[Any]:
    """The run's committed cost: every batch's billed cost once collected, else the
    projected cost it reserved (a batch that never reserved and is not collected counts
    nothing; one ended without being sent counts nothing)."""
    per_batch = sa.case(
        (batches.c.provider_status == NOT_SENT, sa.literal(0.0)),
        else_=sa.func.coalesce(batches.c.cost_usd, batches.c.est_cost_usd, sa.literal(0.0)),
    )
    return sa.select(sa.func.sum(per_batch)).where(batches.c.run_pk == run_pk)


def fits(committed: float, projected: float, cap: float) -> bool:
    """Whether ``projected`` more fits under ``cap`` on top of ``committed`` (to within
    rounding)."""
    return committed + projected <= cap + _ROUNDING * max(cap, 1.0)


class BudgetOperations(SqlConnector):
    """Reservations of projected cost under a run's spending cap."""

    def reserve_cost(self, run_pk: int, batch_pk: int, est_cost_usd: float, cap: float) -> bool:
        """Reserve a batch's projected cost under the run's spending cap before its create:
        True if the batch holds a reservation (it did already, or the run's committed cost
        plus ``est_cost_usd`` fits under the cap).

        One write transaction holding the run's row (``FOR UPDATE`` on Postgres; SQLite's
        writing transactions are serialised already) while it sums the run's committed
        cost, so two workers reserving batches of the same run take turns and never both
        pass the cap. The cap is
        ``cap`` or, when higher, the one the run holds by now (raised by a resume since the
        caller read it); pass ``math.inf`` to record a reservation unconditionally.
        """
        with self._write() as conn:
            # The batch's row first, then the run's: the order every other transaction that
            # touches both takes, so two of them never wait on each other.
            batch = conn.execute(
                sa.select(batches.c.est_cost_usd)
                .where(batches.c.pk == batch_pk, batches.c.run_pk == run_pk)
                .with_for_update()
            ).first()
            if batch is None:
                return False
            if batch.est_cost_usd is not None:
                return True  # reserved before (a retried create, or a crash after it)
            held = conn.execute(
                sa.select(runs.c.max_cost_usd).where(runs.c.pk == run_pk).with_for_update()
            ).first()
            if held is None:
                return False
            if held.max_cost_usd is not None:
                cap = max(cap, float(held.max_cost_usd))
            committed = float(conn.execute(committed_cost_sql(run_pk)).scalar() or 0.0)
            if not fits(committed, est_cost_usd, cap):
                return False
            conn.execute(
                batches.update()
                .where(batches.c.pk == batch_pk, batches.c.est_cost_usd.is_(None))
                .values(est_cost_usd=est_cost_usd)
            )
        return True
