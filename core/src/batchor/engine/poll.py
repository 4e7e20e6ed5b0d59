"""Poll: provider batch statuses -> local batch states."""

from __future__ import annotations

import json

from batchor.engine.context import RunContext, log
from batchor.providers.base import TransientProviderError
from batchor.states import BatchStatus


def poll(ctx: RunContext) -> int:
    """Refresh every submitted batch from the provider; returns how many have ended.

    A transient error skips that batch until the next poll: polling never gives up a batch.
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
            if ctx.store.update_batch(
                batch.pk,
                BatchStatus.SUBMITTED,
                status=BatchStatus.ENDED,
                provider_status=remote.status,
                output_file_id=remote.output_file_id,
                error_file_id=remote.error_file_id,
                errors=json.dumps([list(e) for e in remote.errors]) if remote.errors else None,
            ):
                ended += 1
                log.info("batch %s: provider batch %s", batch.batch_key, remote.status)
        elif remote.status != batch.provider_status:
            ctx.store.update_batch(batch.pk, BatchStatus.SUBMITTED, provider_status=remote.status)
    return ended
