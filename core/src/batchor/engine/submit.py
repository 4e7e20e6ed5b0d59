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

from batchor.engine.backoff import backoff_delay
from batchor.engine.claims import owner, owner_gone, this_process
from batchor.engine.context import RunContext, log
from batchor.errors import ProviderAuthError, ProviderError, ProviderQuotaError
from batchor.providers.base import ProviderBatch, TransientProviderError
from batchor.states import BatchStatus, RunStatus
from batchor.stores.base import BatchRecord

META_RUN_ID = "batchor_run_id"
META_BATCH_KEY = "batchor_batch_key"
# How far before the batch row's creation a provider batch may be dated (clock skew).
_CLOCK_SKEW = 300.0
# A create call gives up after 60 s (see OpenAIBatchProvider); a create claim younger than
# this may still produce a provider batch, so nobody else creates it meanwhile.
CREATE_LEASE_SECONDS = 120.0
CREATE_GRACE_SECONDS = 10.0


def upload_filename(batch_key: str) -> str:
    """The filename a batch's input is uploaded under."""
    return "batchor-" + batch_key.replace("/", "-") + ".jsonl"


def submit(ctx: RunContext) -> int:
    """Upload and create every prepared or uploaded batch that is not backing off; returns
    how many were submitted.

    A transient provider error leaves the batch where it is, backing off exponentially, to
    be continued (after a lookup) by a later call. ``insufficient_quota`` pauses the run.
    """
    submitted = 0
    now = time.time()
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.PREPARED, BatchStatus.UPLOADED]):
        if batch.not_before is not None and batch.not_before > now:
            continue
        try:
            if _submit_one(ctx, batch):
                submitted += 1
        except ProviderQuotaError as exc:
            ctx.store.set_run_status(
                ctx.run.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING], pause_reason=str(exc)
            )
            log.warning("run %s paused: %s", ctx.run.run_id, exc)
            break
        except _Postponed as postponed:
            failures = batch.failures + 1
            delay = backoff_delay(failures)
            ctx.store.update_batch(
                batch.pk, postponed.status, failures=failures, not_before=time.time() + delay
            )
            log.warning(
                "batch %s: submission postponed %.0f s: %s",
                batch.batch_key,
                delay,
                postponed.__cause__,
            )
    return submitted


class _Postponed(Exception):
    """A transient failure at a step, and the batch status it left the batch in."""

    def __init__(self, status: BatchStatus) -> None:
        self.status = status


def _submit_one(ctx: RunContext, batch: BatchRecord) -> bool:
    file_id = batch.file_id
    if batch.status is BatchStatus.PREPARED:
        try:
            file_id, extras = _upload(ctx, batch)
        except TransientProviderError as exc:
            raise _Postponed(BatchStatus.PREPARED) from exc
        if not ctx.store.update_batch(
            batch.pk, BatchStatus.PREPARED, status=BatchStatus.UPLOADED, file_id=file_id
        ):
            # Another worker recorded an upload first; delete ours unless it is the same file.
            winner = ctx.store.get_batch(batch.pk)
            if winner is None or winner.file_id != file_id:
                ctx.provider.delete_file(file_id)
            return False
        # Copies left by interrupted attempts go only now that this one is recorded: a
        # live worker's copy may still win the record above, so it is never deleted first.
        for extra in extras:
            ctx.provider.delete_file(extra)
    assert file_id is not None
    try:
        return _create(ctx, batch, file_id)
    except TransientProviderError as exc:
        raise _Postponed(BatchStatus.UPLOADED) from exc


def _upload(ctx: RunContext, batch: BatchRecord) -> tuple[str, list[str]]:
    """Upload the batch's input file, or adopt the one an interrupted attempt uploaded (the
    provider only creates a file once its whole content has arrived). Returns the file id
    and any extra copies, to delete once the file id is recorded, so no orphaned upload is
    left behind."""
    filename = upload_filename(batch.batch_key)
    earlier = ctx.provider.find_uploads(filename, batch.created_at - _CLOCK_SKEW)
    if earlier:
        log.info("batch %s: adopted upload %s", batch.batch_key, earlier[0])
        return earlier[0], earlier[1:]
    with ctx.artifacts.open_read(batch.input_artifact) as fh:
        return ctx.provider.upload_file(fh, filename), []


def _create(ctx: RunContext, batch: BatchRecord, file_id: str) -> bool:
    if batch.create_started_at is not None:
        found = find_remote(ctx, batch)
        if found is not None:
            log.info("batch %s: adopted provider batch %s", batch.batch_key, found.id)
            return ctx.store.mark_submitted(batch.pk, found.id, found.status)
        if _create_in_flight(batch):
            return False  # another worker's create may still land: look again later
    limit = ctx.settings.token_limit
    if limit is not None and not ctx.store.reserve_tokens(batch.pk, limit):
        log.info("batch %s: waiting for room under the enqueued-token limit", batch.batch_key)
        return False
    now = time.time()
    if not ctx.store.update_batch(
        batch.pk,
        BatchStatus.UPLOADED,
        expect={"create_started_at": batch.create_started_at},
        create_started_at=now,
        claimed_by=owner(),
    ):
        return False  # another worker is creating it, or the run was cancelled
    metadata = {META_RUN_ID: ctx.run.run_id, META_BATCH_KEY: batch.batch_key}
    try:
        created = ctx.provider.create_batch(file_id, ctx.settings.endpoint, metadata)
    except (TransientProviderError, ProviderAuthError, ProviderQuotaError):
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


def _create_in_flight(batch: BatchRecord) -> bool:
    """Whether a create another worker started may still be under way: its claim is younger
    than the longest a create call can take, unless its process is known to be gone (then a
    short grace covers a request that reached the provider just before the process died)."""
    assert batch.create_started_at is not None
    if batch.claimed_by == owner() or (
        this_process(batch.claimed_by) and owner_gone(batch.claimed_by)
    ):
        return False  # an earlier attempt of this process, which has returned
    age = time.time() - batch.create_started_at
    if owner_gone(batch.claimed_by):
        return age < CREATE_GRACE_SECONDS
    return age < CREATE_LEASE_SECONDS


def find_remote(ctx: RunContext, batch: BatchRecord) -> ProviderBatch | None:
    """The provider batch created for ``batch`` by an earlier, interrupted attempt, if any."""
    for remote in ctx.provider.list_batches(created_after=batch.created_at - _CLOCK_SKEW):
        meta = remote.metadata
        if meta.get(META_BATCH_KEY) == batch.batch_key and meta.get(META_RUN_ID) == (
            ctx.run.run_id
        ):
            return remote
    return None
