"""The store's side of finishing the stragglers (`FinishSync`): when the run entered its
last stretch, the one claim that lets a single worker send its items synchronously, items
claimed before each request and answered exactly once, the items of a stopped batch taken
over after the grace, and the lines such a batch answered for them later (duplicates).

Items in flight synchronously are ``submitted`` with no batch (``batch_pk`` NULL): every
answer is applied under that guard, so an item is answered once however many answers come.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import sqlalchemy as sa

from batchor.states import ItemStatus
from batchor.stores.base import FINISH_MODE_CAPPED as CAPPED
from batchor.stores.base import FINISH_MODE_SYNC as SYNC
from batchor.stores.records import ItemOutcome, PendingItem
from batchor.stores.schema import batches, items, runs
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.failures import record_failures
from batchor.stores.sql.statements import CHUNK, awaiting, lock_run, next_tick

_SUBMITTED = ItemStatus.SUBMITTED.value
_PENDING = ItemStatus.PENDING.value


def _in_flight(run_pk: int) -> tuple[sa.ColumnElement[bool], ...]:
    """Items of the run in flight synchronously (``submitted`` in no batch)."""
    return (items.c.run_pk == run_pk, items.c.status == _SUBMITTED, items.c.batch_pk.is_(None))


class FinishOperations(SqlConnector):
    """Finishing the stragglers synchronously."""

    def mark_stragglers(self, run_pk: int, at: float | None) -> float | None:
        """Record since when the run has few enough items left to finish synchronously
        (``at``; compare-and-set: the first worker's time stands) or, with ``None``, that it
        no longer has; returns the time recorded. Changes nothing once in finish mode."""
        undecided = (runs.c.pk == run_pk, runs.c.finish_mode.is_(None))
        with self._write() as conn:
            if at is None:
                conn.execute(runs.update().where(*undecided).values(finish_since=None))
                return None
            conn.execute(
                runs.update()
                .where(*undecided, runs.c.finish_since.is_(None))
                .values(finish_since=at)
            )
            return conn.execute(sa.select(runs.c.finish_since).where(runs.c.pk == run_pk)).scalar()

    def enter_finish(self, run_pk: int) -> bool:
        """Put the run in finish mode (nothing more is packed; its pending items are sent
        synchronously); True for the one caller that moved it."""
        stmt = (
            runs.update()
            .where(
                runs.c.pk == run_pk, runs.c.finish_mode.is_(None), runs.c.finish_since.isnot(None)
            )
            .values(finish_mode=SYNC, updated_at=now())
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def claim_sync(
        self, run_pk: int, owner: str, lease: float, *, steal_from: str | None = None
    ) -> bool:
        """Claim (or renew) sending the run's items synchronously for ``lease`` seconds:
        True if the run is in finish mode and no other worker holds a live claim (or the
        holder is ``steal_from``, a process known gone). Taking the claim over from another
        worker hands the items it left in flight back to ``pending`` (no attempt charged:
        their answers, if any come, are no longer awaited)."""
        at = now()
        free = sa.or_(
            runs.c.sync_owner.is_(None),
            runs.c.sync_owner == owner,
            runs.c.sync_lease_until < at,
            *(() if steal_from is None else (runs.c.sync_owner == steal_from,)),
        )
        with self._write() as conn:
            held = conn.execute(
                sa.select(runs.c.sync_owner)
                .where(runs.c.pk == run_pk, runs.c.finish_mode == SYNC, free)
                .with_for_update()
            ).first()
            if held is None:
                return False
            conn.execute(
                runs.update()
                .where(runs.c.pk == run_pk)
                .values(sync_owner=owner, sync_lease_until=at + lease)
            )
            if held.sync_owner != owner:
                conn.execute(items.update().where(*_in_flight(run_pk)).values(status=_PENDING))
        return True

    def end_sync(self, run_pk: int, owner: str, *, capped: bool = False) -> None:
        """Give up the claim (if ``owner`` holds it); with ``capped``, end the synchronous
        sending for good: the synchronous cap is reached, the rest goes in batches."""
        values: dict[str, object] = {"sync_owner": None, "sync_lease_until": None}
        if capped:
            values["finish_mode"] = CAPPED
        with self._write() as conn:
            conn.execute(
                runs.update().where(runs.c.pk == run_pk, runs.c.sync_owner == owner).values(values)
            )

    def claim_sync_items(self, run_pk: int, limit: int) -> list[PendingItem]:
        """Take up to ``limit`` pending items, in seq order, to send synchronously: they are
        ``submitted`` in no batch once this returns, so no other sender takes them."""
        with self._write() as conn:
            rows = conn.execute(
                sa.select(
                    items.c.seq,
                    items.c.attempts,
                    items.c.req_slice,
                    items.c.req_offset,
                    items.c.req_length,
                    items.c.est_tokens,
                )
                .where(items.c.run_pk == run_pk, items.c.status == _PENDING)
                .order_by(items.c.seq)
                .limit(limit)
            ).all()
            if not rows:
                return []
            taken = set(
                conn.execute(
                    items.update()
                    .where(
                        items.c.run_pk == run_pk,
                        items.c.seq.in_([r.seq for r in rows]),
                        items.c.status == _PENDING,
                    )
                    .values(status=_SUBMITTED, batch_pk=None)
                    .returning(items.c.seq)
                ).scalars()
            )
        return [PendingItem(*r) for r in rows if r.seq in taken]

    def release_sync_items(self, run_pk: int, seqs: Collection[int]) -> int:
        """Hand items taken to send synchronously but not sent back to ``pending`` (no
        attempt charged); returns how many."""
        moved = 0
        ordered = sorted(seqs)
        with self._write() as conn:
            for start in range(0, len(ordered), CHUNK):
                chunk = ordered[start : start + CHUNK]
                moved += conn.execute(
                    items.update()
                    .where(*_in_flight(run_pk), items.c.seq.in_(chunk))
                    .values(status=_PENDING)
                ).rowcount
        return moved

    def apply_sync(
        self,
        run_pk: int,
        outcomes: Sequence[ItemOutcome],
        billed: tuple[int, int],
        max_attempts: int,
    ) -> int:
        """Apply synchronous answers to their items, each only while the item is still in
        flight synchronously (so at most once), and add what the requests billed
        (``(input, output)`` tokens, applied or not) to the run, in one transaction; returns
        how many items changed. A ``retry`` on an item's last attempt fails it."""
        at = now()
        changed = answered = 0
        with self._write() as conn:
            tick = next_tick(conn, run_pk) if outcomes else 0
            for o in outcomes:
                where = (*_in_flight(run_pk), items.c.seq == o.seq)
                tokens = {"input_tokens": o.input_tokens, "output_tokens": o.output_tokens}
                if o.kind == "completed":
                    values: dict[str, object] = {
                        "status": ItemStatus.COMPLETED.value,
                        "attempts": items.c.attempts + 1,
                        "output_text": o.output_text,
                        "error_class": None,
                        "error_message": None,
                        "error_retryable": None,
                        "error_attempt": None,
                        "done_tick": tick,
                        **tokens,
                    }
                else:
                    record_failures(
                        conn,
                        where,
                        error_class=o.error_class or "unknown",
                        message=o.message or "",
                        retryable=o.retryable,
                        created_at=at,
                        with_batch=False,
                    )
                    retries = (
                        items.c.attempts + 1 < max_attempts if o.kind == "retry" else sa.false()
                    )
                    values = {
                        "status": sa.case((retries, _PENDING), else_=ItemStatus.FAILED.value),
                        "attempts": items.c.attempts + 1,
                        "output_text": o.output_text,
                        "error_class": o.error_class,
                        "error_message": o.message,
                        "error_retryable": o.retryable,
                        "error_attempt": items.c.attempts + 1,
                        "done_tick": sa.case((retries, sa.null()), else_=tick),
                        **tokens,
                    }
                moved = conn.execute(items.update().where(*where).values(values)).rowcount
                changed += moved
                answered += moved if o.kind == "completed" else 0
            conn.execute(
                runs.update()
                .where(runs.c.pk == run_pk)
                .values(
                    sync_answered=runs.c.sync_answered + answered,
                    sync_input_tokens=runs.c.sync_input_tokens + max(billed[0], 0),
                    sync_output_tokens=runs.c.sync_output_tokens + max(billed[1], 0),
                    updated_at=at,
                )
            )
        return changed

    def take_over_stopped(self, run_pk: int, batch_pk: int) -> int:
        """Take the unanswered items of a batch stopped to finish synchronously, which the
        provider has not ended within the grace, out of it: back to ``pending`` in no batch
        (no attempt charged), to be sent synchronously; a line the batch answers for one
        later is a duplicate. Returns how many."""
        stmt = (
            items.update()
            .where(
                items.c.run_pk == run_pk,
                items.c.batch_pk == batch_pk,
                awaiting(),
            )
            .values(status=_PENDING, batch_pk=None)
        )
        with self._write() as conn:
            # After any collection of the batch in flight has committed, so an item it
            # completed stays in the batch (and one taken here is not completed after).
            lock_run(conn, run_pk)
            return int(conn.execute(stmt).rowcount)

    def record_duplicates(self, run_pk: int, batch_pk: int, seqs: Collection[int]) -> int:
        """Count and record, on the batch, its answered lines (``seqs``) for items no longer
        in it: taken over to be answered synchronously. Idempotent (a count, not an
        increment); returns it."""
        ordered = sorted(set(seqs))
        found = 0
        with self._write() as conn:
            for start in range(0, len(ordered), CHUNK):
                chunk = ordered[start : start + CHUNK]
                found += int(
                    conn.execute(
                        sa.select(sa.func.count()).where(
                            items.c.run_pk == run_pk,
                            items.c.seq.in_(chunk),
                            sa.or_(items.c.batch_pk.is_(None), items.c.batch_pk != batch_pk),
                        )
                    ).scalar_one()
                )
            conn.execute(batches.update().where(batches.c.pk == batch_pk).values(duplicates=found))
        return found

    def duplicate_count(self, run_pk: int) -> int:
        """The duplicate answers recorded over the run's batches."""
        stmt = sa.select(sa.func.coalesce(sa.func.sum(batches.c.duplicates), 0)).where(
            batches.c.run_pk == run_pk
        )
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())
