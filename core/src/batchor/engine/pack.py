"""Pack: pending items -> batch input files filled toward the provider's limits."""

from __future__ import annotations

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


def pack(ctx: RunContext) -> int:
    """Pack every pending item into new ``prepared`` batches; returns how many were made.

    Packing waits until ingestion is complete, so batches are filled toward the limits rather
    than cut per slice, and nothing is sent from a source that turns out to be invalid.
    """
    if not ctx.run.ingest_complete:
        return 0
    limits = ctx.settings
    prefix_tail = f'","method":"POST","url":"{limits.endpoint}","body":'.encode()
    made = 0
    after = 0
    with ExitStack() as stack:
        reader = _RequestReader(ctx, stack)
        builder: _BatchBuilder | None = None
        too_large: list[int] = []
        try:
            while page := ctx.store.pending_items(ctx.run.pk, after, _PAGE):
                for item in page:
                    after = item.seq
                    line = b'{"custom_id":"' + str(item.seq).encode() + prefix_tail
                    line += reader.body(item) + b"}\n"
                    if len(line) > limits.max_bytes:
                        too_large.append(item.seq)
                        continue
                    if builder is not None and not builder.fits(len(line)):
                        made += builder.close()
                        builder = None
                    if builder is None:
                        builder = _BatchBuilder(ctx)
                    builder.add(item.seq, line)
        except BaseException:
            if builder is not None:
                builder.abort()
            raise
        if builder is not None:
            made += builder.close()
        if too_large:
            ctx.store.fail_pending(
                ctx.run.pk,
                too_large,
                "request_too_large",
                f"the request line is larger than the batch limit of {limits.max_bytes} bytes",
            )
    return made


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

    def fits(self, length: int) -> bool:
        limits = self._ctx.settings
        return len(self.seqs) < limits.max_requests and self.size + length <= limits.max_bytes

    def add(self, seq: int, line: bytes) -> None:
        self._writer.write(line)
        self.seqs.append(seq)
        self.size += len(line)

    def abort(self) -> None:
        """Drop the unfinished file; its items stay pending."""
        self._writer_cm.__exit__(RuntimeError, RuntimeError("pack aborted"), None)

    def close(self) -> int:
        """Make the file durable, then record the batch; 1 if recorded, 0 if another worker
        packed these items first."""
        self._writer_cm.__exit__(None, None, None)
        record = self._ctx.store.record_batch(
            self._ctx.run.pk, self.batch_key, self.artifact, self.seqs, self.size
        )
        if record is None:
            self._ctx.artifacts.delete(self.artifact)
            log.info("batch %s: items were packed concurrently; dropped", self.batch_key)
            return 0
        log.info("packed %s: %d requests, %d bytes", self.batch_key, len(self.seqs), self.size)
        return 1
