"""Cancel: wind a cancelling run down. Nothing new is sent; batches never created are
dropped with their items cancelled; with a remote cancel, live provider batches are asked to
stop. Answered lines of every batch are still collected."""

from __future__ import annotations

from batchor.engine.context import RunContext, log
from batchor.engine.lookup import Refused, find_remote
from batchor.engine.submit import INLINE_FILE_ID
from batchor.errors import ProviderError
from batchor.providers.base import TransientProviderError
from batchor.states import BatchStatus

_STOPPING = frozenset({"cancelling", "cancelled"})


def wind_down(ctx: RunContext) -> None:
    """One step of cancelling: drop what was never sent, stop what is live if asked."""
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.PREPARED, BatchStatus.UPLOADED]):
        try:
            if batch.create_started_at is not None:
                # A create was attempted: the provider may have the batch. Adopt it if so.
                found = find_remote(ctx, batch)
                if found is not None:
                    ctx.store.mark_submitted(batch.pk, found.id, found.status)
                    continue
            # Only while the create claim is as seen (none, or one the lookup proved never
            # reached the provider): a worker claiming it meanwhile wins, and the batch is
            # adopted on a later step instead of dropped.
            if ctx.store.drop_batch(batch.pk, batch.status, batch.create_started_at):
                log.info("batch %s: dropped, its items cancelled", batch.batch_key)
                if batch.file_id not in (None, INLINE_FILE_ID):
                    ctx.transport.delete_file(batch.file_id)
        except (TransientProviderError, Refused) as exc:
            # Refused: the provider holds more than one batch it may be; it is not dropped.
            log.warning("batch %s: cancel step postponed: %s", batch.batch_key, exc)
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
