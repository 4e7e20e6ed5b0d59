"""Submit: the exactly-once protocol for turning a prepared batch into one provider batch.

1. The batch row and its queued items were recorded when the input file was packed.
2. Upload under a filename derived from the batch key; record the file id.
3. Mark that a create is being attempted, then create with metadata naming the run and the
   batch key, the SDK's automatic retries off; record the provider batch id.
4. A batch left with a create attempted but no provider id is first looked up among the
   provider's batches (newest first, back to the batch row's creation) by its metadata:
   found -> adopted; absent -> created.
"""

from __future__ import annotations

import json
import time

from batchor.engine.context import RunContext, log
from batchor.errors import ProviderAuthError, ProviderError
from batchor.providers.base import ProviderBatch, TransientProviderError
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord

META_RUN_ID = "batchor_run_id"
META_BATCH_KEY = "batchor_batch_key"
# How far before the batch row's creation a provider batch may be dated (clock skew).
_CLOCK_SKEW = 300.0


def upload_filename(batch_key: str) -> str:
    """The filename a batch's input is uploaded under."""
    return "batchor-" + batch_key.replace("/", "-") + ".jsonl"


def submit(ctx: RunContext) -> int:
    """Upload and create every prepared or uploaded batch; returns how many were submitted.

    A transient provider error leaves the batch where it is, to be continued (after a
    lookup) by the next call.
    """
    submitted = 0
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.PREPARED, BatchStatus.UPLOADED]):
        try:
            if _submit_one(ctx, batch):
                submitted += 1
        except TransientProviderError as exc:
            log.warning("batch %s: submission postponed: %s", batch.batch_key, exc)
    return submitted


def _submit_one(ctx: RunContext, batch: BatchRecord) -> bool:
    file_id = batch.file_id
    if batch.status is BatchStatus.PREPARED:
        with ctx.artifacts.open_read(batch.input_artifact) as fh:
            file_id = ctx.provider.upload_file(fh, upload_filename(batch.batch_key))
        if not ctx.store.update_batch(
            batch.pk, BatchStatus.PREPARED, status=BatchStatus.UPLOADED, file_id=file_id
        ):
            ctx.provider.delete_file(file_id)  # another worker uploaded it first
            return False
    assert file_id is not None
    if batch.create_started_at is not None:
        found = find_remote(ctx, batch)
        if found is not None:
            log.info("batch %s: adopted provider batch %s", batch.batch_key, found.id)
            return ctx.store.mark_submitted(batch.pk, found.id, found.status)
    now = time.time()
    if not ctx.store.update_batch(
        batch.pk,
        BatchStatus.UPLOADED,
        expect={"create_started_at": batch.create_started_at},
        create_started_at=now,
    ):
        return False  # another worker is creating it
    metadata = {META_RUN_ID: ctx.run.run_id, META_BATCH_KEY: batch.batch_key}
    try:
        created = ctx.provider.create_batch(file_id, ctx.settings.endpoint, metadata)
    except (TransientProviderError, ProviderAuthError):
        raise
    except ProviderError as exc:
        # The provider refused the batch itself (not a transient failure): end the batch so
        # its items are charged an attempt and retried or failed, rather than loop forever.
        ctx.store.update_batch(
            batch.pk,
            BatchStatus.UPLOADED,
            status=BatchStatus.ENDED,
            provider_status="rejected",
            errors=json.dumps([["create_rejected", str(exc)]]),
        )
        log.error("batch %s: the provider rejected it: %s", batch.batch_key, exc)
        return False
    log.info("batch %s: created provider batch %s", batch.batch_key, created.id)
    return ctx.store.mark_submitted(batch.pk, created.id, created.status)


def find_remote(ctx: RunContext, batch: BatchRecord) -> ProviderBatch | None:
    """The provider batch created for ``batch`` by an earlier, interrupted attempt, if any."""
    for remote in ctx.provider.list_batches(created_after=batch.created_at - _CLOCK_SKEW):
        meta = remote.metadata
        if meta.get(META_BATCH_KEY) == batch.batch_key and meta.get(META_RUN_ID) == (
            ctx.run.run_id
        ):
            return remote
    return None
