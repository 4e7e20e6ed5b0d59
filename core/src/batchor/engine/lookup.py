"""Finding a batch again at the provider: the one an interrupted create made (by its
metadata, or, where the provider keeps none, by when it was made and how many requests it
holds), and, before a batch key is first created, one an earlier life of the run made (its
store lost)."""

from __future__ import annotations

import time

from batchor.engine.context import RunContext, log
from batchor.providers.base import ProviderBatch
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord

META_RUN_ID = "batchor_run_id"
META_BATCH_KEY = "batchor_batch_key"
META_INPUT_SHA256 = "batchor_input_sha256"
# Provider batches with another input that never bought anything: they do not block a create.
_HARMLESS = frozenset({"failed", "cancelled"})
# How far before the batch row's creation a provider batch may be dated (clock skew).
CLOCK_SKEW = 300.0
# A batch with this key and other requests that ended and was made longer ago than this (the
# 24 h window and a margin) belongs to an earlier job under the same run id, not to a life of
# this one whose store was lost: it does not stop a create (where batches never expire, the
# listing reaches back further than this).
ENDED_LOOKBACK_SECONDS = 26 * 3600.0
# How long after a create was claimed the batch it made may be dated (the create call's
# longest wait and a margin).
_CREATE_WINDOW = 180.0


class Refused(Exception):
    """The provider holds a batch with this batch key but other requests: creating another
    could pay twice for the same items, so the run stops and says why."""


def find_remote(ctx: RunContext, batch: BatchRecord) -> ProviderBatch | None:
    """The provider batch created for ``batch`` by an earlier, interrupted attempt, if any.

    Raises:
        Refused: the provider keeps no metadata and more than one batch may be it.
    """
    if not ctx.transport.tags_batches:
        return _find_untagged(ctx, batch)
    for remote in ctx.transport.list_batches(created_after=batch.created_at - CLOCK_SKEW):
        meta = remote.metadata
        if meta.get(META_BATCH_KEY) == batch.batch_key and meta.get(META_RUN_ID) == (
            ctx.run.run_id
        ):
            return remote
    return None


def _find_untagged(ctx: RunContext, batch: BatchRecord) -> ProviderBatch | None:
    """Where batches carry no metadata: the provider batch made within the window of the
    batch's recorded create, holding exactly its number of requests, and held by no other
    batch of the run. Only one create of a run is ever unsettled at a time (see
    `batchor.engine.submit`), so at most one of the run's own batches can match; a second
    match is another client's, and rather than guess, the run stops and says so."""
    started = batch.create_started_at
    if started is None:
        return None
    held = {
        b.provider_batch_id
        for b in ctx.store.batches(ctx.run.pk, list(BatchStatus))
        if b.provider_batch_id is not None
    }
    latest = started + _CREATE_WINDOW + CLOCK_SKEW
    found = [
        remote
        for remote in ctx.transport.list_batches(created_after=started - CLOCK_SKEW)
        if remote.created_at <= latest
        and remote.request_count == batch.request_count
        and remote.id not in held
    ]
    if len(found) > 1:
        raise Refused(
            f"batch {batch.batch_key}: its create was interrupted, and the provider holds "
            f"{len(found)} batches that may be it ({', '.join(r.id for r in found)}: made "
            f"then, with its {batch.request_count} requests); nothing was created, so as not "
            "to pay twice. Cancel the ones that are not this run's at the provider and resume"
        )
    return found[0] if found else None


def lookup_first_create(
    ctx: RunContext, batch: BatchRecord, checksum: str | None
) -> ProviderBatch | None:
    """Before a batch key is first created: the provider batch an earlier life of this run
    created for it, with the same input checksum, if any (its store was lost).

    Where batches carry no metadata, nothing can be recognised this way: ``None``.

    Raises:
        Refused: the provider holds a live or finished batch with this key and other input.
    """
    if not ctx.transport.tags_batches:
        return None
    if ctx.remote_batches is None:
        ctx.remote_batches = list_run_batches(ctx)
    candidates = ctx.remote_batches.get(batch.batch_key, [])
    same = [c for c in candidates if checksum and c.metadata.get(META_INPUT_SHA256) == checksum]
    if same:
        if len(candidates) > 1:
            log.warning(
                "batch %s: the provider holds %d batches with this batch key: %s",
                batch.batch_key,
                len(candidates),
                ", ".join(c.id for c in candidates),
            )
        return same[0]
    for other in candidates:
        recorded = other.metadata.get(META_INPUT_SHA256)
        what = (
            f"other requests (input checksum {recorded[:12]}..., this one's "
            f"{(checksum or 'unknown')[:12]}...)"
            if recorded
            else "no input checksum to compare"
        )
        stale = other.is_terminal and other.created_at < time.time() - ENDED_LOOKBACK_SECONDS
        if other.status in _HARMLESS or stale:
            log.warning(
                "batch %s: provider batch %s carries this batch key with %s; it %s, so it is "
                "not adopted and a new batch is created",
                batch.batch_key,
                other.id,
                what,
                f"{other.status} over 26 h ago" if stale else other.status,
            )
            continue
        raise Refused(
            f"batch {batch.batch_key}: provider batch {other.id} ({other.status}) already "
            f"carries this run id and batch key, with {what}; nothing was created, so as not "
            "to pay twice for the same items. Start the job under a new run id, or cancel "
            f"{other.id} at the provider and resume this run"
        )
    return None


def list_run_batches(ctx: RunContext) -> dict[str, list[ProviderBatch]]:
    """The provider's batches of this run created within the look-back, by batch key, newest
    first (one listing, paged)."""
    found: dict[str, list[ProviderBatch]] = {}
    # A batch created before the look-back has ended long ago; where batches never expire,
    # one of any age may still be live (the run's record may be younger than its batches:
    # its store was lost), so every batch is listed.
    lookback = ctx.limits.lookback_seconds
    since = 0.0 if lookback is None else time.time() - lookback
    for remote in ctx.transport.list_batches(created_after=since):
        meta = remote.metadata
        key = meta.get(META_BATCH_KEY)
        if key is not None and meta.get(META_RUN_ID) == ctx.run.run_id:
            found.setdefault(key, []).append(remote)
    log.info(
        "run %s: %d provider batches of this run %s",
        ctx.run.run_id,
        sum(map(len, found.values())),
        f"in the last {lookback / 3600:.0f} h" if lookback is not None else "in all",
    )
    return found
