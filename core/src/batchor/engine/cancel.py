"""Cancel: wind a cancelling run down. Nothing new is sent; batches never created are
dropped with their items cancelled; with a remote cancel, live provider batches are asked to
stop. Answered lines of every batch are still collected."""

from __future__ import annotations

from collections.abc import Callable

from batchor.engine.context import RunContext, log
from batchor.engine.lookup import Refused, find_remote
from batchor.engine.pack import dissolve_forming
from batchor.engine.submit import INLINE_FILE_ID, create_in_flight
from batchor.errors import ProviderError, TransientProviderError
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord

_STOPPING = frozenset({"cancelling", "cancelled"})


def wind_down(ctx: RunContext) -> None:
    """One step of cancelling: drop what was never sent, stop what is live if asked."""
    dissolve_forming(ctx, force=True)  # their items are pending: cancelled with the rest
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.PREPARED, BatchStatus.UPLOADED]):
        drop_unsent(
            ctx,
            batch,
            lambda b: ctx.store.drop_batch(b.pk, b.status, b.create_started_at),
            "dropped, its items cancelled",
        )
    if not ctx.run.cancel_remote:
        return
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.SUBMITTED]):
        if batch.provider_status in _STOPPING or batch.provider_batch_id is None:
            continue
        try:
            remote = ctx.transport.cancel_batch(batch.provider_batch_id)
        except ProviderError as exc:  # e.g. it completed meanwhile: it is collected as is
            log.warning("batch %s: cancel refused: %s", batch.batch_key, exc)
            continue
        ctx.store.record_provider_status(batch.pk, remote.status)
        log.info("batch %s: provider batch %s", batch.batch_key, remote.status)


def drop_unsent(
    ctx: RunContext,
    batch: BatchRecord,
    drop: Callable[[BatchRecord], bool],
    done: str,
    *,
    wait_for_creates: bool = False,
) -> None:
    """Drop a ``prepared`` or ``uploaded`` batch that must never be sent, with ``drop`` (a
    store transition guarded by the batch's status and create claim as seen), and delete its
    upload; log ``done`` if it was dropped.

    A batch whose create was attempted may exist at the provider: it is looked up first and
    adopted (``submitted``) if found, to be stopped like any live batch. With
    ``wait_for_creates``, one whose create another worker may still be making is left for a
    later step instead of dropped (the create would land on a dropped batch). A transient
    failure of the lookup, or more than one provider batch that may be it, leaves it too.
    """
    try:
        if batch.create_started_at is not None:
            found = find_remote(ctx, batch)
            if found is not None:
                ctx.store.mark_submitted(batch.pk, found.id, found.status)
                return
            if wait_for_creates and create_in_flight(batch, batch.create_started_at):
                return
        # Only while the create claim is as seen (none, or one the lookup proved never
        # reached the provider): a worker claiming it meanwhile wins, and the batch is
        # adopted on a later step instead of dropped.
        if drop(batch):
            log.info("batch %s: %s", batch.batch_key, done)
            if batch.file_id not in (None, INLINE_FILE_ID):
                ctx.transport.delete_file(batch.file_id)
    except (TransientProviderError, Refused) as exc:
        # Refused: the provider holds more than one batch it may be; it is not dropped.
        log.warning("batch %s: not dropped yet: %s", batch.batch_key, exc)
