"""Pack: pending items -> batch input files filled toward the provider's limits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import BinaryIO

from batchor.engine.context import RunContext, log
from batchor.stores.base import PendingItem

_PAGE = 5_000


class _RequestReader:
    """Reads request bodies back from ingestion slices, keeping each slice file open."""

    def __init__(self, ctx: RunContext, stack: ExitStack) -> None:
        self._ctx = ctx
        self._stack = stack
        self._open: dict[int, BinaryIO] = {}

    def body(self, item: PendingItem) -> bytes:
        fh = self._open.get(item.req_slice)
        if fh is None:
            fh = self._stack.enter_context(
                self._ctx.artifacts.open_read(self._ctx.slice_key(item.req_slice))
            )
            self._open[item.req_slice] = fh
        fh.seek(item.req_offset)
        return fh.read(item.req_length)


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
    made = 0
    too_large: list[tuple[int, str]] = []
    with ExitStack() as stack:
        builder: _BatchBuilder | None = None
        try:
            for seq, line, tokens in _request_lines(ctx, _RequestReader(ctx, stack), too_large):
                if builder is not None and not builder.fits(len(line), tokens):
                    full, builder = builder, None
                    made += full.close()
                    if max_batches is not None and made >= max_batches:
                        break  # this line's item stays pending for the next call
                if builder is None:
                    builder = _BatchBuilder(ctx)
                builder.add(seq, line, tokens)
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


def _request_lines(
    ctx: RunContext, reader: _RequestReader, too_large: list[tuple[int, str]]
) -> Iterator[tuple[int, bytes, int]]:
    """Batch input lines of the pending items in seq order, with their estimated tokens;
    items that alone exceed a batch's byte limit or the token budget are set aside in
    ``too_large`` with the reason."""
    token_limit = ctx.settings.token_limit
    prefix_tail = f'","method":"POST","url":"{ctx.settings.endpoint}","body":'.encode()
    after = 0
    while page := ctx.store.pending_items(ctx.run.pk, after, _PAGE):
        for item in page:
            after = item.seq
            line = b'{"custom_id":"' + str(item.seq).encode() + prefix_tail
            line += reader.body(item) + b"}\n"
            tokens = item.est_tokens or 0
            if len(line) > ctx.settings.max_bytes:
                too_large.append(
                    (
                        item.seq,
                        "the request line is larger than the batch limit of "
                        f"{ctx.settings.max_bytes} bytes",
                    )
                )
                continue
            if token_limit is not None and tokens > token_limit:
                too_large.append(
                    (
                        item.seq,
                        f"the request's estimated {tokens} tokens exceed the "
                        f"enqueued_token_limit of {token_limit}",
                    )
                )
                continue
            yield item.seq, line, tokens


class _BatchBuilder:
    """One batch input file being written, and the items in it."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        number = ctx.store.allocate_batch_number(ctx.run.pk)
        self.batch_key = f"{ctx.run.run_id}/{number:06d}"
        self.artifact = f"{ctx.batch_dir(self.batch_key)}/input.jsonl"
        self._writer_cm = ctx.artifacts.open_write(self.artifact)
        self._writer = self._writer_cm.__enter__()
        self.seqs: list[int] = []
        self.size = 0
        self.tokens = 0

    def fits(self, length: int, tokens: int) -> bool:
        limits = self._ctx.settings
        return (
            len(self.seqs) < limits.max_requests
            and self.size + length <= limits.max_bytes
            and (limits.token_limit is None or self.tokens + tokens <= limits.token_limit)
        )

    def add(self, seq: int, line: bytes, tokens: int) -> None:
        self._writer.write(line)
        self.seqs.append(seq)
        self.size += len(line)
        self.tokens += tokens

    def abort(self) -> None:
        """Drop the unfinished file; its items stay pending."""
        self._writer_cm.__exit__(RuntimeError, RuntimeError("pack aborted"), None)

    def close(self) -> int:
        """Make the file durable, then record the batch; 1 if recorded, 0 if another worker
        packed these items first."""
        self._writer_cm.__exit__(None, None, None)
        settings = self._ctx.settings
        record = self._ctx.store.record_batch(
            self._ctx.run.pk,
            self.batch_key,
            self.artifact,
            self.seqs,
            self.size,
            est_tokens=self.tokens,
            quota_scope=settings.quota_scope if settings.token_limit is not None else None,
        )
        if record is None:
            self._ctx.artifacts.delete(self.artifact)
            log.info("batch %s: items were packed concurrently; dropped", self.batch_key)
            return 0
        log.info("packed %s: %d requests, %d bytes", self.batch_key, len(self.seqs), self.size)
        return 1
