"""Submit: the exactly-once protocol for turning a prepared batch into one provider batch.

1. The batch row and its queued items were recorded when the input file was packed (with a
   manifest holding the file's SHA-256 and the slice ranges it was copied from).
2. Before the first create of a batch key, the provider is asked for a batch already
   carrying it: the provider's batches of the last completion window (the provider's
   look-back; where batches never expire, every batch) are listed once per run context,
   newest first. One with the same run id, batch key and input
   checksum is adopted (the store that recorded it was lost); one with another checksum stops
   the run (paused, saying why) rather than buy the batch twice.
3. Upload under a filename derived from the batch key and the input checksum (so an upload
   left by an interrupted attempt is adopted only if it holds the same requests); record the
   file id.
4. Mark that a create is being attempted, then create with metadata naming the run, the
   batch key and the input checksum, the SDK's automatic retries off; record the provider
   batch id.
5. A batch left with a create attempted but no provider id is first looked up among the
   provider's batches (newest first, back to the batch row's creation) by its metadata:
   found -> adopted; absent -> created.
"""

from __future__ import annotations

import hashlib
import time
from functools import partial

from batchor.engine.backoff import backoff_delay
from batchor.engine.budget import OverBudget, admit, reserve_adopted
from batchor.engine.claims import held_elsewhere, lease_seconds, owner, owner_gone, this_process
from batchor.engine.context import RunContext, log
from batchor.engine.lookup import (
    CLOCK_SKEW,
    META_BATCH_KEY,
    META_INPUT_SHA256,
    META_RUN_ID,
    Refused,
    find_remote,
    lookup_first_create,
)
from batchor.engine.pack import read_manifest, rebuild_input
from batchor.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    RunStateError,
    TransientProviderError,
)
from batchor.providers.base import ProviderBatch
from batchor.states import BatchStatus, PauseCode, RunStatus
from batchor.stores.base import BatchError, BatchRecord

# A create call gives up after 60 s (the transports' create timeout); a create claim younger
# than this may still produce a provider batch, so nobody else creates it meanwhile.
CREATE_LEASE_SECONDS = 120.0
CREATE_GRACE_SECONDS = 10.0


#: The file id recorded for a batch whose requests go inline in the create call.
INLINE_FILE_ID = "inline"


def upload_filename(batch_key: str, checksum: str | None) -> str:
    """The filename a batch's input is uploaded under: its batch key and the first 16 hex
    digits of its SHA-256, so an earlier life's upload of other requests under the same run id
    is never taken for this one."""
    name = "batchor-" + batch_key.replace("/", "-")
    return f"{name}-{checksum[:16]}.jsonl" if checksum else f"{name}.jsonl"


def submit(ctx: RunContext) -> int:
    """Upload and create every prepared or uploaded batch that is not backing off (nor
    held for its upload by the live worker elsewhere that packed it); returns how many
    were submitted.

    A transient provider error leaves the batch where it is, backing off exponentially, to
    be continued (after a lookup) by a later call. ``insufficient_quota`` pauses the run.
    """
    submitted = 0
    now = time.time()
    stuck: RunStateError | None = None
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.PREPARED, BatchStatus.UPLOADED]):
        if batch.not_before is not None and batch.not_before > now:
            continue
        if batch.status is BatchStatus.PREPARED and not _hold_upload(ctx, batch, now):
            continue  # its packer, or whoever took its upload, sends it
        try:
            if _submit_one(ctx, batch):
                submitted += 1
        except ProviderQuotaError as exc:
            ctx.store.set_run_status(
                ctx.run.pk,
                RunStatus.PAUSED,
                expected=[RunStatus.RUNNING],
                pause_reason=str(exc),
                pause_code=PauseCode.QUOTA,
            )
            log.warning("run %s paused: %s", ctx.run.run_id, exc)
            break
        except Refused as exc:
            ctx.remote_batches = None  # look again when resumed: the user may cancel it
            ctx.store.set_run_status(
                ctx.run.pk,
                RunStatus.PAUSED,
                expected=[RunStatus.RUNNING],
                pause_reason=str(exc),
                pause_code=PauseCode.CONFLICT,
            )
            log.error("run %s paused: %s", ctx.run.run_id, exc)
            break
        except OverBudget:  # the run is paused: nothing more is sent
            break
        except RunStateError as exc:  # its input is lost: the other batches still go
            stuck = stuck or exc
        except _Postponed as postponed:
            failures = batch.failures + 1
            delay = backoff_delay(failures)
            ctx.store.postpone(
                batch.pk, postponed.status, failures=failures, not_before=time.time() + delay
            )
            log.warning(
                "batch %s: submission postponed %.0f s: %s",
                batch.batch_key,
                delay,
                postponed.__cause__,
            )
    if stuck is not None:
        raise stuck
    return submitted


def _hold_upload(ctx: RunContext, batch: BatchRecord, now: float) -> bool:
    """Take (or renew) the hold on a prepared batch for this worker's upload, for a lease
    from now: its packer's hold may have run down while earlier batches were sent, and the
    file may take a while to go. False if another live worker holds it (its packer, or a
    worker that took its upload meanwhile)."""
    if held_elsewhere(batch.claimed_by, batch.lease_until, now):
        return False
    return ctx.store.claim_batch(
        batch.pk, BatchStatus.PREPARED, owner(), lease_seconds(), steal_from=batch.claimed_by
    )


class _Postponed(Exception):
    """A transient failure at a step, and the batch status it left the batch in."""

    def __init__(self, status: BatchStatus) -> None:
        self.status = status


def _submit_one(ctx: RunContext, batch: BatchRecord) -> bool:
    checksum = input_checksum(ctx, batch)
    if batch.create_started_at is None:
        try:
            found = lookup_first_create(ctx, batch, checksum)
        except TransientProviderError as exc:
            raise _Postponed(batch.status) from exc
        if found is not None:
            return _adopt(ctx, batch, found)
    file_id = (
        _upload_recorded(ctx, batch, checksum)
        if batch.status is BatchStatus.PREPARED
        else batch.file_id  # an uploaded batch always holds its file id
    )
    if file_id is None:
        return False  # not recorded: another worker recorded it first, or it was refused
    try:
        return _create(ctx, batch, file_id, checksum)
    except TransientProviderError as exc:
        raise _Postponed(BatchStatus.UPLOADED) from exc


def _upload_recorded(ctx: RunContext, batch: BatchRecord, checksum: str | None) -> str | None:
    """Upload the batch's input and record the file id (``prepared`` -> ``uploaded``); for a
    transport that sends requests inline, only the step is recorded. ``None``: not recorded
    (another worker recorded it first, or the provider refused the file)."""
    if ctx.transport.inline_requests:
        return INLINE_FILE_ID if ctx.store.record_upload(batch.pk, INLINE_FILE_ID) else None
    try:
        file_id, extras = _upload(ctx, batch, checksum)
    except TransientProviderError as exc:
        raise _Postponed(BatchStatus.PREPARED) from exc
    except (ProviderAuthError, ProviderQuotaError):
        raise
    except ProviderError as exc:  # the file itself refused (too large, invalid): no retry
        _reject(ctx, batch, BatchStatus.PREPARED, "upload_rejected", exc)
        return None
    if not ctx.store.record_upload(batch.pk, file_id):
        # Another worker recorded an upload first; delete ours unless it is the same file.
        winner = ctx.store.get_batch(batch.pk)
        if winner is None or winner.file_id != file_id:
            ctx.transport.delete_file(file_id)
        return None
    # Copies left by interrupted attempts go only now that this one is recorded: a live
    # worker's copy may still win the record above, so it is never deleted first.
    for extra in extras:
        ctx.transport.delete_file(extra)
    return file_id


def _upload(ctx: RunContext, batch: BatchRecord, checksum: str | None) -> tuple[str, list[str]]:
    """Upload the batch's input file, or adopt the one an interrupted attempt uploaded (the
    provider only creates a file once its whole content has arrived). Returns the file id
    and any extra copies, to delete once the file id is recorded, so no orphaned upload is
    left behind."""
    filename = upload_filename(batch.batch_key, checksum)
    earlier = ctx.transport.find_uploads(filename, batch.created_at - CLOCK_SKEW)
    if earlier:
        log.info("batch %s: adopted upload %s", batch.batch_key, earlier[0])
        return earlier[0], earlier[1:]
    with ctx.artifacts.open_read(batch.input_artifact) as fh:
        return ctx.transport.upload_file(fh, filename), []


def _create(ctx: RunContext, batch: BatchRecord, file_id: str, checksum: str | None) -> bool:
    if batch.create_started_at is not None:
        found = find_remote(ctx, batch)
        if found is not None:
            log.info("batch %s: adopted provider batch %s", batch.batch_key, found.id)
            return ctx.store.mark_submitted(batch.pk, found.id, found.status)
        if create_in_flight(batch, batch.create_started_at):
            return False  # another worker's create may still land: look again later
    if not ctx.transport.tags_batches and _another_create_uncertain(ctx, batch):
        # Where batches carry no metadata, a batch is recognised by when it was made and its
        # size: one create of the run at a time may be unanswered, so no two can be confused.
        log.info("batch %s: waits until the run's other create is settled", batch.batch_key)
        return False
    deadline = ctx.run.deadline_at
    if deadline is not None and time.time() >= deadline:
        return False  # past the run's deadline nothing is created (engine.deadline ends it)
    admit(ctx, batch)  # under the run's spending cap, or OverBudget (the run is paused)
    limit = ctx.settings.token_limit
    if limit is not None and not ctx.store.reserve_tokens(batch.pk, limit):
        log.info("batch %s: waiting for room under the enqueued-token limit", batch.batch_key)
        return False
    if not ctx.store.claim_create(batch.pk, owner(), seen=batch.create_started_at, at=time.time()):
        return False  # another worker is creating it, or the run was cancelled
    metadata = {META_RUN_ID: ctx.run.run_id, META_BATCH_KEY: batch.batch_key}
    if checksum is not None:
        metadata[META_INPUT_SHA256] = checksum
    try:
        if ctx.transport.inline_requests:
            if not ctx.artifacts.exists(batch.input_artifact):
                rebuild_input(ctx, batch)
            created = ctx.transport.create_batch(
                file_id,
                ctx.codec.endpoint,
                metadata,
                partial(ctx.artifacts.open_read, batch.input_artifact),
            )
        else:
            created = ctx.transport.create_batch(file_id, ctx.codec.endpoint, metadata)
    except (TransientProviderError, ProviderAuthError, ProviderQuotaError):
        raise
    except ProviderError as exc:
        _reject(ctx, batch, BatchStatus.UPLOADED, "create_rejected", exc)
        return False
    log.info("batch %s: created provider batch %s", batch.batch_key, created.id)
    return ctx.store.mark_submitted(batch.pk, created.id, created.status)


def _reject(
    ctx: RunContext, batch: BatchRecord, status: BatchStatus, code: str, exc: ProviderError
) -> None:
    """The provider refused the batch's file or the batch itself (not a transient failure):
    end the batch so its items are charged an attempt and retried or failed, rather than
    loop for ever."""
    ctx.store.reject(batch.pk, status, BatchError(code, str(exc)))
    log.error("batch %s: the provider rejected it: %s", batch.batch_key, exc)


def _another_create_uncertain(ctx: RunContext, batch: BatchRecord) -> bool:
    """Whether another batch of the run has a create attempted and no provider batch id."""
    return any(
        other.pk != batch.pk and other.create_started_at is not None
        for other in ctx.store.batches(ctx.run.pk, [BatchStatus.UPLOADED])
    )


def create_in_flight(batch: BatchRecord, started: float) -> bool:
    """Whether a create another worker started may still be under way: its claim is younger
    than the longest a create call can take, unless its process is known to be gone (then a
    short grace covers a request that reached the provider just before the process died)."""
    if batch.claimed_by == owner() or (
        this_process(batch.claimed_by) and owner_gone(batch.claimed_by)
    ):
        return False  # an earlier attempt of this process, which has returned
    age = time.time() - started
    if owner_gone(batch.claimed_by):
        return age < CREATE_GRACE_SECONDS
    return age < CREATE_LEASE_SECONDS


def input_checksum(ctx: RunContext, batch: BatchRecord) -> str | None:
    """The SHA-256 of the batch's input file: from its manifest, else read from the file. A
    prepared batch's lost input file is rebuilt from the request slices first. ``None`` only
    for an uploaded batch whose local files are both gone (it is created unchecked).

    Raises:
        RunStateError: a prepared batch's input file is gone and cannot be rebuilt.
    """
    if batch.status is BatchStatus.PREPARED and not ctx.artifacts.exists(batch.input_artifact):
        return rebuild_input(ctx, batch)
    manifest = read_manifest(ctx, batch)
    if manifest is not None and isinstance(manifest.get("sha256"), str):
        return str(manifest["sha256"])
    if not ctx.artifacts.exists(batch.input_artifact):
        return None
    digest = hashlib.sha256()
    with ctx.artifacts.open_read(batch.input_artifact) as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _adopt(ctx: RunContext, batch: BatchRecord, remote: ProviderBatch) -> bool:
    """Record a provider batch found with this batch's key and requests as the batch's own,
    claiming its create first (as a create would), so no other worker creates it meanwhile."""
    if not ctx.store.claim_adoption(
        batch.pk, batch.status, owner(), remote.input_file_id, at=time.time()
    ):
        return False  # another worker moved it first
    limit = ctx.settings.token_limit
    if limit is not None:
        ctx.store.reserve_tokens(batch.pk, limit)  # best effort: it is in flight regardless
    reserve_adopted(ctx, batch)  # likewise its projected cost, under a spending cap
    if not ctx.store.mark_submitted(batch.pk, remote.id, remote.status):
        return False
    log.warning(
        "batch %s: adopted provider batch %s (%s), found at the provider with the same "
        "requests although the store had no record of it",
        batch.batch_key,
        remote.id,
        remote.status,
    )
    if batch.file_id not in (None, INLINE_FILE_ID, remote.input_file_id):
        ctx.transport.delete_file(batch.file_id)  # our own upload, now unused
    return True
