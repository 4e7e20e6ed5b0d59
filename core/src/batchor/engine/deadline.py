"""Deadlines and batch timeouts: the checks a reconcile step makes.

Everything is decided from the store and the clock, so any worker in any process (a fresh
``BatchRunner.get_run(id).refresh()``, or several at once) does the same, and each provider
call happens once:

- **Batch timeout.** A ``submitted`` batch whose create was recorded at least
  ``BatchLimits.batch_timeout`` ago is stopped: `stop_if_due` (called by the poll with the
  batch's fresh provider status) claims the stop in the store, a compare-and-set that
  exactly one worker wins, and the winner alone cancels it at the provider and records the
  status it answers. A cancel that failed (or whose sender died) is sent again, by one
  worker, once the claim is older than the lease (``$BATCHOR_LEASE_SECONDS``, 60 s) and the
  provider still does not report the batch cancelling.
- **Run deadline.** Once ``run.deadline_at`` has passed, nothing new is packed or created;
  every live batch is stopped as above (reason ``deadline``); `enforce_deadline` drops the
  batches never created (one whose create was attempted is looked up at the provider first
  and adopted if it is there, to be stopped instead) and fails their items and the pending
  ones ``deadline``. The run then ends ``completed_with_failures`` the usual way.
- **When a stopped batch ends**, its answered lines are applied as usual. `settle_unanswered`
  hands its unanswered items back to ``pending`` without charging an attempt, so they go out
  again together in one new batch; once the run's deadline has passed they (and those of
  any batch that ends after it) end ``failed`` with class ``deadline`` instead, no attempt
  charged.

A running or paused run is held to its deadline; a cancelling one winds down its own way
(`batchor.engine.cancel`). Batch timeouts hold whatever the run's state.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from batchor.engine.cancel import drop_unsent
from batchor.engine.claims import lease_seconds
from batchor.engine.context import RunContext, log
from batchor.engine.pack import dissolve_forming
from batchor.errors import ProviderError, TransientProviderError
from batchor.states import BatchStatus, RunStatus
from batchor.stores.base import BATCH_TIMEOUT, DEADLINE, BatchRecord, RunRecord

_STOPPING = frozenset({"cancelling", "cancelled"})
_ENFORCED = (RunStatus.RUNNING, RunStatus.PAUSED)


def deadline_passed(run: RunRecord, now: float | None = None) -> bool:
    """Whether the run has a deadline and it has passed (at ``now``, else the clock)."""
    if run.deadline_at is None:
        return False
    return (time.time() if now is None else now) >= run.deadline_at


def _held_to_deadline(run: RunRecord, now: float | None = None) -> bool:
    """Whether the run's deadline has passed and it is held to it: a running or paused run
    (a cancelling one winds down its own way)."""
    return run.status in _ENFORCED and deadline_passed(run, now)


def deadline_message(run: RunRecord) -> str:
    """The error message of an item the run's deadline ended."""
    assert run.deadline_at is not None
    when = datetime.fromtimestamp(run.deadline_at, UTC).isoformat(timespec="seconds")
    return f"the run's deadline ({when}) passed before this item was answered"


def stop_if_due(ctx: RunContext, batch: BatchRecord, remote_status: str, now: float) -> None:
    """Stop a live provider batch past the run's deadline or its own timeout: claim the stop
    and, if this worker won it, cancel the batch at the provider. Send the cancel again if
    an earlier one was claimed over a lease ago and the provider (``remote_status``, just
    polled) still does not report the batch cancelling."""
    if batch.stop_reason is None:
        reason = _due(ctx, batch, now)
        if reason is None or not ctx.store.claim_stop(batch.pk, reason, now):
            return
        log.info("batch %s: stopping it (%s)", batch.batch_key, reason)
    elif (
        remote_status in _STOPPING
        or batch.stop_requested_at is None
        or now - batch.stop_requested_at < lease_seconds()
        or not ctx.store.retry_stop(batch.pk, batch.stop_requested_at, now)
    ):
        return
    _cancel(ctx, batch)


def _due(ctx: RunContext, batch: BatchRecord, now: float) -> str | None:
    """Why ``batch`` must stop now, if it must: the run's deadline, else its timeout."""
    if _held_to_deadline(ctx.run, now):
        return DEADLINE
    timeout, started = ctx.settings.batch_timeout, batch.submitted_at
    if timeout is not None and started is not None and started + timeout <= now:
        return BATCH_TIMEOUT
    return None


def _cancel(ctx: RunContext, batch: BatchRecord) -> None:
    """Cancel a stopped batch at the provider and record the status it answers."""
    assert batch.provider_batch_id is not None
    try:
        remote = ctx.transport.cancel_batch(batch.provider_batch_id)
    except TransientProviderError as exc:
        log.warning("batch %s: cancel failed, sent again later: %s", batch.batch_key, exc)
        return
    except ProviderError as exc:  # e.g. it ended meanwhile: it is collected as it ended
        log.warning("batch %s: cancel refused: %s", batch.batch_key, exc)
        return
    ctx.store.record_provider_status(batch.pk, remote.status)
    log.info("batch %s: provider batch %s", batch.batch_key, remote.status)


def enforce_deadline(ctx: RunContext) -> bool:
    """Once the run's deadline has passed, end what can no longer be sent: batches never
    created are dropped with their items failed ``deadline``, and so are pending items
    (live batches are stopped by the poll). Returns whether the deadline has passed: then
    nothing more is packed. A cancelling run winds down its own way."""
    run = ctx.run
    if not deadline_passed(run):
        return False
    if run.status not in _ENFORCED:
        return True
    message = deadline_message(run)
    dissolve_forming(ctx, force=True)  # their items are pending: failed with the rest
    for batch in ctx.store.batches(run.pk, [BatchStatus.PREPARED, BatchStatus.UPLOADED]):
        drop_unsent(
            ctx,
            batch,
            lambda b: ctx.store.drop_unsent(b.pk, b.status, b.create_started_at, message),
            "dropped at the run's deadline, its items failed",
            wait_for_creates=True,
        )
    failed = ctx.store.fail_open(run.pk, message)
    if failed:
        log.warning("run %s: deadline passed, %d pending items failed", run.run_id, failed)
    return True


def settle_unanswered(ctx: RunContext, batch: BatchRecord, charge: tuple[str, str] | None) -> int:
    """Dispose of an ended batch's unanswered items; returns how many moved.

    Once the run's deadline has passed they end ``failed``, class ``deadline`` (nothing
    more is sent); a batch batchor stopped hands them back to ``pending`` free (the
    provider never ran them); any other batch's go back charged as its verdict says.
    """
    run = ctx.run
    if _held_to_deadline(run):
        failed = ctx.store.fail_open(run.pk, deadline_message(run), batch_pk=batch.pk)
        if failed:
            log.info("batch %s: %d unanswered items failed (deadline)", batch.batch_key, failed)
        return failed
    if batch.stop_reason is not None:
        charge = None
    requeued = ctx.store.requeue_unanswered(
        run.pk, batch.pk, charge=charge, max_attempts=ctx.settings.max_attempts
    )
    if requeued:
        log.info("batch %s: %d unanswered items back to pending", batch.batch_key, requeued)
    return requeued
