"""The store's collection: answered lines applied to their items in set-based statements,
unanswered items returned to pending, the batch marked collected with its tokens."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.records import ItemOutcome
from batchor.stores.schema import batches, items, runs
from batchor.stores.sql import postgres
from batchor.stores.sql.bulk import bulk, is_postgres
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.failures import record_failures
from batchor.stores.sql.statements import (
    APPLY_OUTCOME,
    APPLY_OUTCOME_KEYS,
    OUTCOME_KEYS,
    RECORD_LINE_FAILURE,
    RECORD_LINE_FAILURE_KEYS,
    apply_completed,
    awaiting,
    lock_run,
    next_tick,
    release,
)

# What a value the backend cannot take raises (a number out of the column's range, text
# too long, a string the driver cannot encode): it fails the item, not the batch.
_UNSTORABLE = (sa.exc.DataError, UnicodeError, OverflowError)
# Far above any real count, and the sum of a thousand of them still fits a BIGINT.
_TOKENS_MAX = 2**53


class CollectOperations(SqlConnector):
    """Collection."""

    def apply_outcomes(
        self, run_pk: int, batch_pk: int, outcomes: Sequence[ItemOutcome], max_attempts: int
    ) -> int:
        """Apply answered lines to items still submitted in the batch, in one transaction;
        returns how many items changed.

        Attempts are counted in SQL and every statement is guarded by "still submitted in
        this batch", so a line applied by an earlier, interrupted collection changes nothing.
        A ``retry`` on an item's last attempt fails it.
        """
        if not outcomes:
            return 0
        try:
            return self._apply_outcomes(run_pk, batch_pk, outcomes, max_attempts)
        except _UNSTORABLE as exc:
            if len(outcomes) > 1:  # find the lines at fault by halves; the rest apply
                half = len(outcomes) // 2
                return self.apply_outcomes(
                    run_pk, batch_pk, outcomes[:half], max_attempts
                ) + self.apply_outcomes(run_pk, batch_pk, outcomes[half:], max_attempts)
            cause = exc.orig if isinstance(exc, sa.exc.StatementError) else exc
            detail = (str(cause).strip().splitlines() or [""])[0]
            reason = f"the reply could not be stored: {type(cause).__name__}: {detail}"
            failed = ItemOutcome(outcomes[0].seq, "failed", None, "unstorable", reason[:500])
            return self._apply_outcomes(run_pk, batch_pk, [failed], max_attempts)

    def _apply_outcomes(
        self, run_pk: int, batch_pk: int, outcomes: Sequence[ItemOutcome], max_attempts: int
    ) -> int:
        at = now()
        with self._write() as conn:
            if is_postgres(conn):
                return postgres.apply_outcomes(
                    conn,
                    run_pk,
                    batch_pk,
                    outcomes,
                    max_attempts=max_attempts,
                    take_tick=lambda: next_tick(conn, run_pk),
                    now=at,
                )
            tick = next_tick(conn, run_pk)
            failures = [
                (
                    run_pk,
                    o.seq,
                    batch_pk,
                    o.error_class or "unknown",
                    o.message or "",
                    o.retryable,
                    at,
                )
                for o in outcomes
                if o.kind != "completed"
            ]
            completed = [o for o in outcomes if o.kind == "completed"]
            others = [
                (
                    run_pk,
                    o.seq,
                    batch_pk,
                    o.kind,
                    max_attempts,
                    o.output_text,
                    o.error_class,
                    o.message,
                    o.retryable,
                    o.input_tokens,
                    o.output_tokens,
                    tick,
                )
                for o in outcomes
                if o.kind != "completed"
            ]
            if failures:  # before the update: it reads the attempt number the update bumps
                bulk(conn, RECORD_LINE_FAILURE, RECORD_LINE_FAILURE_KEYS, failures)
            changed = 0
            if completed:
                completing = apply_completed(run_pk, batch_pk, tick)
                changed += bulk(conn, completing, OUTCOME_KEYS, completed)
            if others:
                changed += bulk(conn, APPLY_OUTCOME, APPLY_OUTCOME_KEYS, others)
        return changed

    def finish_batch(
        self,
        run_pk: int,
        batch_pk: int,
        input_tokens: int,
        output_tokens: int,
        *,
        cost_usd: float | None = None,
    ) -> bool:
        """Mark an ended batch collected and add the tokens it billed to the run (and record
        its cost), in one transaction; False if it was not ended (another worker finished
        it)."""
        # Counts a provider reports past any integer column would stop the run for good.
        input_tokens = min(max(input_tokens, 0), _TOKENS_MAX)
        output_tokens = min(max(output_tokens, 0), _TOKENS_MAX)
        at = now()
        with self._write() as conn:
            moved = conn.execute(
                batches.update()
                .where(batches.c.pk == batch_pk, batches.c.status == BatchStatus.ENDED.value)
                .values(
                    status=BatchStatus.COLLECTED.value,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cost_usd=cost_usd,
                    updated_at=at,
                )
            ).rowcount
            if moved != 1:
                return False
            release(conn, batch_pk)
            conn.execute(
                runs.update()
                .where(runs.c.pk == run_pk)
                .values(
                    input_tokens=runs.c.input_tokens + input_tokens,
                    output_tokens=runs.c.output_tokens + output_tokens,
                    updated_at=at,
                )
            )
        return True

    def requeue_unanswered(
        self,
        run_pk: int,
        batch_pk: int,
        *,
        charge: tuple[str, str] | None,
        max_attempts: int,
    ) -> int:
        """Return the batch's unanswered items to ``pending`` (charging if asked): those still
        ``submitted``, and those still ``queued`` in a batch the provider refused to create.
        Returns how many moved."""
        where = (items.c.batch_pk == batch_pk, awaiting())
        with self._write() as conn:
            if charge is None:
                lock_run(conn, run_pk)  # after a collection of the batch in flight commits
                moved = int(
                    conn.execute(
                        items.update().where(*where).values(status=ItemStatus.PENDING.value)
                    ).rowcount
                )
                _count_requeued(conn, batch_pk, moved)
                return moved
            error_class, message = charge
            tick = next_tick(conn, run_pk)
            record_failures(
                conn,
                where,
                error_class=error_class,
                message=message,
                retryable=True,
                created_at=now(),
            )
            out_of_attempts = items.c.attempts + 1 >= max_attempts
            moved = int(
                conn.execute(
                    items.update()
                    .where(*where)
                    .values(
                        status=sa.case(
                            (out_of_attempts, ItemStatus.FAILED.value),
                            else_=ItemStatus.PENDING.value,
                        ),
                        done_tick=sa.case((out_of_attempts, tick), else_=sa.null()),
                        attempts=items.c.attempts + 1,
                        error_class=error_class,
                        error_message=message,
                        error_retryable=True,
                        error_attempt=items.c.attempts + 1,
                    )
                ).rowcount
            )
            _count_requeued(conn, batch_pk, moved)
            return moved


def _count_requeued(conn: sa.Connection, batch_pk: int, moved: int) -> None:
    """Add to the batch's count of unanswered items its collection handed back."""
    if moved:
        conn.execute(
            batches.update()
            .where(batches.c.pk == batch_pk)
            .values(requeued=sa.func.coalesce(batches.c.requeued, 0) + moved)
        )
