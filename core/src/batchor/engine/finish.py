"""Finishing the stragglers (`FinishSync`): the last few items of a run, held up in batches
the provider is slow to finish, sent through its ordinary synchronous API instead.

Everything is decided from the store and the clock, so any worker (a fresh process, or
several at once) does the same, and each provider call happens once in the normal case:

- **When.** A reconcile step finds the run's items still ``submitted`` in live batches; when
  there are between 1 and ``when_remaining_at_most`` of them, nothing is waiting to be
  packed or sent, and the whole source is in, it records since when (``runs.finish_since``,
  a compare-and-set: every worker sees the first time). Once that has held for ``after``
  the run enters finish mode (``runs.finish_mode = 'sync'``, exactly one worker moves it).
- **Stopping the batches.** In finish mode nothing more is packed. Every live batch is
  stopped with reason ``finish_sync`` (`StateStore.claim_stop`: exactly one worker wins and
  cancels it at the provider; a failed cancel is sent again by the poll, as for a
  deadline). When it ends, its answered lines are applied as usual and its unanswered
  items go back to ``pending`` without an attempt charged. A stopped batch the provider has
  not ended within ``cancel_grace`` has its unanswered items taken out of it
  (`StateStore.take_over_stopped`) to be sent synchronously anyway; a line it answers later
  for one of them is a *duplicate answer*: billed in the batch's usage, not applied, counted
  on the batch.
- **Sending** and its **cost**: `batchor.engine.sync_send`.
"""

from __future__ import annotations

import time

from batchor.engine.claims import lease_seconds, owner, owner_gone
from batchor.engine.context import RunContext, log
from batchor.engine.deadline import deadline_passed
from batchor.engine.sync_send import send_pending
from batchor.errors import ConfigurationError, ProviderError
from batchor.jobs import FinishSync
from batchor.providers.base import BatchTransport, sends_sync
from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import FINISH_MODE_CAPPED as CAPPED
from batchor.stores.base import FINISH_MODE_SYNC as SYNC
from batchor.stores.base import FINISH_SYNC, BatchRecord

_UNSENT = (BatchStatus.FORMING, BatchStatus.PREPARED, BatchStatus.UPLOADED)
_SENT = (BatchStatus.SUBMITTED, BatchStatus.ENDED)


def check_sync_transport(
    finish_sync: FinishSync | None, provider: str, transport: BatchTransport
) -> None:
    """Refuse `BatchJob.finish_sync` for a provider whose transport cannot send requests
    synchronously (before anything is created).

    Raises:
        ConfigurationError: names the setting and the provider.
    """
    if finish_sync is not None and not sends_sync(transport):
        raise ConfigurationError(
            f"BatchJob.finish_sync is set but provider {provider} cannot send requests "
            "synchronously (only OpenAI, Azure OpenAI, Anthropic and Gemini can): leave "
            "finish_sync out"
        )


def finish_stragglers(ctx: RunContext) -> bool:
    """The finish step of a running run: enter finish mode when due, then stop the live
    batches and send the pending items synchronously. Returns whether the run is in finish
    mode after it (then nothing is packed)."""
    fs = ctx.settings.finish_sync
    run = ctx.run
    if fs is None or run.finish_mode == CAPPED:
        return False
    if run.finish_mode is None:
        if not _due(ctx, time.time()):
            return False
        if ctx.store.enter_finish(run.pk):
            log.info("run %s: finishing its last items synchronously", run.run_id)
        _reload(ctx)
        if ctx.run.finish_mode != SYNC:
            return False
    _stop_live(ctx)
    if not deadline_passed(ctx.run):
        send_pending(ctx)
        _reload(ctx)
    return ctx.run.finish_mode == SYNC


def _reload(ctx: RunContext) -> None:
    record = ctx.store.get_run(ctx.run.run_id)
    if record is not None:
        ctx.run = record


def _due(ctx: RunContext, now: float) -> bool:
    """Whether the run has had few enough items left in live batches for long enough
    (recording since when, or that it no longer has)."""
    fs, run = ctx.settings.finish_sync, ctx.run
    assert fs is not None
    if _maybe_due(ctx, fs.when_remaining_at_most):
        counts = ctx.store.item_counts(run.pk)
        live = counts[ItemStatus.SUBMITTED]
        waiting = counts[ItemStatus.PENDING] + counts[ItemStatus.QUEUED]
    else:
        live = waiting = 0
    if run.ingest_complete and 1 <= live <= fs.when_remaining_at_most and not waiting:
        since = run.finish_since
        if since is None:
            since = ctx.store.mark_stragglers(run.pk, now)
        return since is not None and now - since >= fs.after.total_seconds()
    if run.finish_since is not None:
        ctx.store.mark_stragglers(run.pk, None)
    return False


def _maybe_due(ctx: RunContext, at_most: int) -> bool:
    """Whether finishing may be due, from the run's row and batches (counting its items scans
    them all): not while the source is read, a batch is unsent, no batch is at the provider,
    or batches it still runs hold more than ``at_most`` items (all in flight until then)."""
    if not ctx.run.ingest_complete:
        return False
    live = 0
    for batch in ctx.store.batches(ctx.run.pk, [*_UNSENT, *_SENT]):
        if batch.status in _UNSENT:
            return False
        live += 1
        if batch.status is BatchStatus.SUBMITTED:
            at_most -= batch.request_count
    return live > 0 and at_most >= 0


def _stop_live(ctx: RunContext) -> None:
    """Stop every live batch (the winner of each stop cancels it at the provider), and
    take the unanswered items out of a stopped one the provider has not ended within the
    grace."""
    fs = ctx.settings.finish_sync
    assert fs is not None
    grace = fs.cancel_grace.total_seconds()
    now = time.time()
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.SUBMITTED]):
        if batch.stop_reason is None:
            if ctx.store.claim_stop(batch.pk, FINISH_SYNC, now):
                log.info("batch %s: stopping it (%s)", batch.batch_key, FINISH_SYNC)
                _cancel(ctx, batch)
        elif (
            batch.stop_reason == FINISH_SYNC
            and batch.stop_requested_at is not None
            and now - batch.stop_requested_at >= grace
        ):
            moved = ctx.store.take_over_stopped(ctx.run.pk, batch.pk)
            if moved:
                log.info(
                    "batch %s: not ended %.0f s after its cancel; its %d unanswered items "
                    "are sent synchronously",
                    batch.batch_key,
                    grace,
                    moved,
                )


def _cancel(ctx: RunContext, batch: BatchRecord) -> None:
    """Cancel a stopped batch at the provider and record the status it answers (a failed
    cancel is sent again by the poll once the stop's lease has passed)."""
    assert batch.provider_batch_id is not None
    try:
        remote = ctx.transport.cancel_batch(batch.provider_batch_id)
    except ProviderError as exc:  # transient: sent again later; else it ended meanwhile
        log.warning("batch %s: cancel failed: %s", batch.batch_key, exc)
        return
    ctx.store.record_provider_status(batch.pk, remote.status)


def reclaim_abandoned(ctx: RunContext) -> None:
    """Past the run's deadline nothing is sent synchronously: hand the items a sender that
    died left in flight back to ``pending`` (where the deadline ends them), once its claim
    has lapsed."""
    run, me = ctx.run, owner()
    if run.finish_mode != SYNC or run.sync_owner is None:
        return
    holder = run.sync_owner
    steal = holder if holder != me and owner_gone(holder) else None
    if ctx.store.claim_sync(run.pk, me, lease_seconds(), steal_from=steal):
        ctx.store.end_sync(run.pk, me)
