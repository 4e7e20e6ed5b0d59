"""Ending: a run ends once nothing is left to do in it (cancelled, or completed with or
without failures). Telling so counts the run's items, a scan of them all, so it is done only
once no batch is live."""

from __future__ import annotations

from collections.abc import Mapping

from batchor.engine.context import RunContext, log
from batchor.errors import RunNotFoundError
from batchor.states import BatchStatus, ItemStatus, RunStatus

_OPEN = (ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.SUBMITTED)


def end_if_done(ctx: RunContext) -> None:
    """End the run if nothing is left to do in it: a cancelling run once no batch is live
    (its open items cancelled), a running or paused one once it is ingested whole, no batch
    is live and no item is open. ``ctx.run`` is reloaded first.

    Raises:
        RunNotFoundError: the run is no longer in the store.
    """
    record = ctx.store.get_run(ctx.run.run_id)
    if record is None:
        raise RunNotFoundError(f"run {ctx.run.run_id!r} no longer exists in the store")
    ctx.run = run = record
    if run.status.is_terminal or live_batches(ctx.store.batch_counts(run.pk)):
        return
    if run.status is RunStatus.CANCELLING:
        ctx.store.cancel_items(run.pk)
        if ctx.store.set_run_status(run.pk, RunStatus.CANCELLED, expected=[RunStatus.CANCELLING]):
            log.info("run %s: cancelled", run.run_id)
        return
    if not run.ingest_complete:
        return
    counts = ctx.store.item_counts(run.pk)
    if any(counts[s] for s in _OPEN):
        return
    final = RunStatus.COMPLETED_WITH_FAILURES if counts[ItemStatus.FAILED] else RunStatus.COMPLETED
    if ctx.store.set_run_status(run.pk, final, expected=[RunStatus.RUNNING, RunStatus.PAUSED]):
        log.info("run %s: %s", run.run_id, final.value)


def live_batches(batches: Mapping[str, int]) -> int:
    """Of a run's batches by status, those not collected yet (forming ones included)."""
    return sum(n for status, n in batches.items() if status != BatchStatus.COLLECTED.value)
