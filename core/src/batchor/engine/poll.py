"""Poll: provider batch statuses -> local batch states; a live batch past the run's
deadline or its own timeout is stopped (see `batchor.engine.deadline`)."""

from __future__ import annotations

import time

from batchor.engine.context import RunContext, log
from batchor.engine.deadline import stop_if_due
from batchor.errors import TransientProviderError
from batchor.states import BatchStatus
from batchor.stores.base import BatchError


def poll(ctx: RunContext) -> int:
    """Refresh every submitted batch from the provider; returns how many have ended.

    A transient error skips that batch until the next poll: polling never gives up a batch.
    A batch still running past the run's deadline or ``BatchLimits.batch_timeout`` is
    cancelled at the provider (by exactly one worker); it is collected once it ends.
    """
    ended = 0
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.SUBMITTED]):
        assert batch.provider_batch_id is not None
        try:
            remote = ctx.transport.retrieve_batch(batch.provider_batch_id)
        except TransientProviderError as exc:
            log.warning("batch %s: poll failed, will retry: %s", batch.batch_key, exc)
            continue
        if remote.is_terminal:
            if ctx.store.mark_ended(
                batch.pk,
                remote.status,
                output_file_id=remote.output_file_id,
                error_file_id=remote.error_file_id,
                errors=[BatchError(code, message) for code, message in remote.errors],
            ):
                ended += 1
                log.info("batch %s: provider batch %s", batch.batch_key, remote.status)
            continue
        if remote.status != batch.provider_status:
            ctx.store.record_provider_status(batch.pk, remote.status)
        stop_if_due(ctx, batch, remote.status, time.time())
    return ended
