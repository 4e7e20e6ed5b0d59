"""Pack: pending items -> batch input files filled toward the provider's limits.

With each batch input file goes its manifest (``requests/batch-NNNNNN.ranges.json``, beside
the request slices it points into): the byte ranges of the slices the file was copied from
and the file's SHA-256. The checksum goes into the
provider batch's metadata (so a batch found at the provider after the store was lost is
adopted only if it holds the same requests), and the ranges rebuild a lost input file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import BinaryIO

from batchor.engine.claims import lease_seconds, owner, owner_gone, this_process
from batchor.engine.context import RunContext, log
from batchor.engine.plan import Cut, PackPlan, drop_plan
from batchor.errors import RunStateError
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord, PendingItem

_PAGE = 5_000
_COPY_CHUNK = 8 << 20

Write = Callable[[bytes], object]


def manifest_key(ctx: RunContext, batch_key: str) -> str:
    """The manifest of a batch's input file: with the request slices it was copied from (so
    it outlives the batch's own folder, and goes when the slices go)."""
    number = batch_key.rsplit("/", 1)[1]
    return f"{ctx.run_dir}/requests/batch-{number}.ranges.json"


class _SliceCopier:
    """Copies request lines from ingestion slices into a batch file, a contiguous byte range
    at a time (consecutive items sit side by side in their slice). Pending items come in seq
    order, so slices are met in order: one reader is open at a time."""

    def __init__(self, ctx: RunContext, stack: ExitStack) -> None:
        self._ctx = ctx
        self._stack = stack
        self._number: int | None = None
        self._reader: ExitStack | None = None
        self._fh: BinaryIO | None = None

    def _open(self, slice_number: int) -> BinaryIO:
        if self._number != slice_number or self._fh is None:
            if self._reader is not None:
                self._reader.close()
            self._reader = self._stack.enter_context(ExitStack())
            self._fh = self._reader.enter_context(
                self._ctx.artifacts.open_read(self._ctx.slice_key(slice_number))
            )
            self._number = slice_number
        return self._fh

    def copy(self, slice_number: int, start: int, end: int, write: Write) -> None:
        fh = self._open(slice_number)
        fh.seek(start)
        remaining = end - start
        while remaining:
            chunk = fh.read(min(remaining, _COPY_CHUNK))
            if not chunk:
                raise ValueError(
                    f"request slice {slice_number} of run {self._ctx.run.run_id!r} is shorter "
                    "than its items say: the artifact store lost or truncated it"
                )
            write(chunk)
            remaining -= len(chunk)


def pack(ctx: RunContext, max_batches: int | None = None) -> int:
    """Pack pending items into new ``prepared`` batches; returns how many were made.

    With ``max_batches``, stop once that many are made (the caller submits each batch while
    the next is packed).

    Packing waits until ingestion is complete, so batches are filled toward the limits rather
    than cut per slice, and nothing is sent from a source that turns out to be invalid; and
    while the run backs off after the provider refused a batch for capacity.
    """
    run = ctx.run
    if not run.ingest_complete:
        return 0
    if run.backoff_until is not None and run.backoff_until > time.time():
        return 0  # the provider refused work for capacity: leave it alone for a while
    plan = ctx.plan
    if plan is not None and plan.ready:
        return _pack_planned(ctx, plan, max_batches)
    drop_plan(ctx)  # not trusted, or not whole: the store says what is pending
    dissolve_forming(ctx, force=False)
    made = 0
    too_large: list[tuple[int, str]] = []
    with ExitStack() as stack:
        builder: _BatchBuilder | None = None
        try:
            copier = _SliceCopier(ctx, stack)
            for item in _sendable(ctx, too_large):
                tokens = item.est_tokens or 0
                if builder is not None and not builder.fits(item.req_length, tokens):
                    full, builder = builder, None
                    made += full.close()
                    if max_batches is not None and made >= max_batches:
                        break  # this item stays pending for the next call
                if builder is None:
                    builder = _BatchBuilder(ctx, copier)
                builder.add(item, tokens)
            else:
                if builder is not None:
                    last, builder = builder, None
                    made += last.close()
        except BaseException:
            if builder is not None:
                builder.abort()
            raise
        for reason in dict.fromkeys(r for _, r in too_large):
            seqs = [seq for seq, r in too_large if r == reason]
            ctx.store.fail_pending(ctx.run.pk, seqs, "request_too_large", reason)
    return made


def _pack_planned(ctx: RunContext, plan: PackPlan, max_batches: int | None) -> int:
    """Pack the batches cut while the run was ingested (`engine.plan`), as `pack` would cut
    them from the pending items, without reading the items back. If the store refuses one
    (its items are no longer all pending), the plan is dropped: the next packing reads the
    store."""
    made = 0
    while plan.cuts and (max_batches is None or made < max_batches):
        cut = plan.cuts[0]
        with ExitStack() as stack:
            builder = _BatchBuilder(ctx, _SliceCopier(ctx, stack))
            try:
                builder.take(cut, plan.owner)
            except BaseException:
                builder.abort()
                raise
            recorded = builder.close()
        plan.cuts.popleft()
        if not recorded:
            drop_plan(ctx)
            break
        made += recorded
    if not plan.cuts:
        ctx.plan = None  # done: packing reads the store from now on (retries)
    return made


def dissolve_forming(ctx: RunContext, *, force: bool) -> int:
    """Dissolve the run's ``forming`` batches no live plan will seal, their items back to
    pending; returns how many. A batch is abandoned when its owner is gone, is of this
    process (whose plan would be packing it instead) or let its lease lapse; with
    ``force`` (the run is cancelled or past its deadline), every one is dissolved."""
    now = time.time()
    dissolved = 0
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.FORMING]):
        claimant, lease = batch.claimed_by, batch.lease_until
        if not force and not (
            lease is None or lease < now or owner_gone(claimant) or this_process(claimant)
        ):
            continue
        moved = ctx.store.dissolve_batch(batch.pk, None if force else lease)
        if moved is not None:
            dissolved += 1
            log.info("a forming batch was dissolved: its %d items are pending again", moved)
    return dissolved


def _sendable(ctx: RunContext, too_large: list[tuple[int, str]]) -> Iterator[PendingItem]:
    """The pending items in seq order; items that alone exceed a batch's byte limit or the
    token budget are set aside in ``too_large`` with the reason."""
    token_limit = ctx.settings.token_limit
    max_bytes = ctx.settings.max_bytes
    after = 0
    while page := ctx.store.pending_items(ctx.run.pk, after, _PAGE):
        for item in page:
            after = item.seq
            tokens = item.est_tokens or 0
            if item.req_length > max_bytes:
                too_large.append(
                    (
                        item.seq,
                        f"the request line is larger than the batch limit of {max_bytes} bytes",
                    )
                )
            elif token_limit is not None and tokens > token_limit:
                too_large.append(
                    (
                        item.seq,
                        f"the request's estimated {tokens} tokens exceed the "
                        f"enqueued_token_limit of {token_limit}",
                    )
                )
            else:
                yield item


class _BatchBuilder:
    """One batch input file being written, and the items in it."""

    def __init__(self, ctx: RunContext, copier: _SliceCopier) -> None:
        self._ctx = ctx
        self._copier = copier
        self._range: tuple[int, int, int] | None = None  # slice, start, end not yet copied
        self._forming: tuple[int, str] | None = None  # a planned batch: its pk and owner
        number = ctx.store.allocate_batch_number(ctx.run.pk)
        self.batch_key = f"{ctx.run.run_id}/{number:06d}"
        self.artifact = f"{ctx.batch_dir(self.batch_key)}/input.jsonl"
        self._writer_cm = ctx.artifacts.open_write(self.artifact)
        self._writer = self._writer_cm.__enter__()
        self.seqs: list[int] = []
        self.size = 0
        self.tokens = 0
        self.ranges: list[tuple[int, int, int]] = []
        self._digest = hashlib.sha256()
        # The limits, read once: `fits` is asked for every item.
        limits = ctx.settings
        self._max_requests = limits.max_requests
        self._max_bytes = limits.max_bytes
        self._token_limit = limits.token_limit

    def _write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._writer.write(chunk)

    def fits(self, length: int, tokens: int) -> bool:
        token_limit = self._token_limit
        return (
            len(self.seqs) < self._max_requests
            and self.size + length <= self._max_bytes
            and (token_limit is None or self.tokens + tokens <= token_limit)
        )

    def add(self, item: PendingItem, tokens: int) -> None:
        end = item.req_offset + item.req_length
        pending = self._range
        if pending is not None and pending[0] == item.req_slice and pending[2] == item.req_offset:
            self._range = (pending[0], pending[1], end)
        else:
            self._flush()
            self._range = (item.req_slice, item.req_offset, end)
        self.seqs.append(item.seq)
        self.size += item.req_length
        self.tokens += tokens

    def take(self, cut: Cut, owner: str) -> None:
        """Write a planned batch: its items' byte ranges, copied as they are (``owner``
        forms it in the store)."""
        if cut.batch_pk is not None:
            self._forming = (cut.batch_pk, owner)
        for number, start, end in cut.ranges:
            self._copier.copy(number, start, end, self._write)
        self.ranges.extend((number, start, end) for number, start, end in cut.ranges)
        self.seqs = list(range(cut.first, cut.last + 1))
        self.size = cut.size
        self.tokens = cut.tokens

    def _flush(self) -> None:
        if self._range is not None:
            self._copier.copy(*self._range, self._write)
            self.ranges.append(self._range)
            self._range = None

    def abort(self) -> None:
        """Drop the unfinished file; its items stay pending."""
        self._writer_cm.__exit__(RuntimeError, RuntimeError("pack aborted"), None)

    def close(self) -> int:
        """Make the file durable, then record the batch; 1 if recorded, 0 if another worker
        packed these items first."""
        self._flush()
        self._writer_cm.__exit__(None, None, None)
        manifest = manifest_key(self._ctx, self.batch_key)
        with self._ctx.artifacts.open_write(manifest) as fh:
            fh.write(
                json.dumps(
                    {
                        "sha256": self._digest.hexdigest(),
                        "bytes": self.size,
                        "requests": len(self.seqs),
                        "ranges": self.ranges,
                    }
                ).encode()
            )
        settings = self._ctx.settings
        scope = settings.quota_scope if settings.token_limit is not None else None
        if self._forming is not None:
            batch_pk, former = self._forming
            record = self._ctx.store.seal_batch(
                batch_pk,
                former,
                batch_key=self.batch_key,
                input_artifact=self.artifact,
                request_count=len(self.seqs),
                input_bytes=self.size,
                est_tokens=self.tokens,
                quota_scope=scope,
                lease_until=time.time() + lease_seconds(),
            )
        else:
            record = self._ctx.store.record_batch(
                self._ctx.run.pk,
                self.batch_key,
                self.artifact,
                self.seqs,
                self.size,
                est_tokens=self.tokens,
                quota_scope=scope,
                owner=owner(),
                lease_until=time.time() + lease_seconds(),
            )
        if record is None:
            self._ctx.artifacts.delete(self.artifact)
            self._ctx.artifacts.delete(manifest)
            log.info("batch %s: items were packed concurrently; dropped", self.batch_key)
            return 0
        log.info("packed %s: %d requests, %d bytes", self.batch_key, len(self.seqs), self.size)
        return 1


def read_manifest(ctx: RunContext, batch: BatchRecord) -> dict[str, object] | None:
    """The manifest of a batch's input file, if it is there (batches packed before manifests
    existed have none)."""
    key = manifest_key(ctx, batch.batch_key)
    if not ctx.artifacts.exists(key):
        return None
    with ctx.artifacts.open_read(key) as fh:
        loaded = json.loads(fh.read())
    return loaded if isinstance(loaded, dict) else None


def rebuild_input(ctx: RunContext, batch: BatchRecord) -> str:
    """Write a batch's lost input file again from the request slices its manifest names,
    byte for byte (checked against the recorded SHA-256); returns the checksum.

    Raises:
        RunStateError: the manifest or a slice is gone too, or the bytes differ.
    """
    manifest = read_manifest(ctx, batch)
    run_id = ctx.run.run_id
    how = (
        f"restore the run's artifacts ({ctx.run_dir}/) from a copy, or cancel the run "
        f"(`batchor cancel {run_id}`), which drops this batch and sends nothing more"
    )
    if manifest is None:
        raise RunStateError(
            f"batch {batch.batch_key}: its input file {batch.input_artifact} is missing, and "
            f"so is the record of the request slices to rebuild it from; {how}"
        )
    digest = hashlib.sha256()
    current = 0
    try:
        with ExitStack() as stack:
            copier = _SliceCopier(ctx, stack)
            with ctx.artifacts.open_write(batch.input_artifact) as out:

                def write(chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)

                for number, start, end in manifest["ranges"]:  # type: ignore[attr-defined]
                    current = int(number)
                    copier.copy(current, int(start), int(end), write)
                if digest.hexdigest() != manifest.get("sha256"):
                    raise ValueError("the rebuilt file differs from the one packed")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = (
            f"request slice {ctx.slice_key(current)} is gone too"
            if isinstance(exc, FileNotFoundError)
            else str(exc)
        )
        raise RunStateError(
            f"batch {batch.batch_key}: its input file {batch.input_artifact} is missing and "
            f"cannot be rebuilt from the request slices ({why}); {how}"
        ) from None
    log.warning(
        "batch %s: input file was missing; rebuilt from the request slices", batch.batch_key
    )
    return digest.hexdigest()
