"""Recording ingested slices: each slice's request lines made durable, then its items, the
source position and its planned batches recorded in one store transaction, while the next
slice is read from the source."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from batchor.engine.claims import lease_seconds
from batchor.engine.context import RunContext, log
from batchor.errors import DuplicateItemError
from batchor.stores.base import FormingItems, NewItem, SourcePart


@dataclass(frozen=True, slots=True)
class Slice:
    """One slice read from the source: its items, their request lines (``requests``, the
    slice artifact ``number``) and the run's position after it."""

    items: list[NewItem]
    requests: bytearray
    number: int
    ingested_count: int
    checkpoint: str | None
    complete: bool
    source_parts: list[SourcePart] | None


# How often a thread that wants the interpreter lock gets it from one that runs Python,
# while slices are recorded on a thread of their own: the recording thread takes the lock
# back after every statement and file write, and at the interpreter's default (5 ms) it
# waited longer for it than the statement took, losing all the overlap.
_SWITCH_SECONDS = 0.0001
_switching = threading.Lock()
_recorders = 0  # recorders running in this process
_saved_switch = 0.0  # the interval found before the first recorder
_our_switch = 0.0  # the interval the first recorder set


def _quick_switches(on: bool) -> None:
    """Shorten the interpreter's switch interval while any recorder runs (for every thread
    of the process); restore the interval found before the first after the last. A process
    that set its own shorter interval keeps it, and one it sets meanwhile (from
    ``build_prompt``, or another thread) is left as it set it."""
    global _recorders, _saved_switch, _our_switch
    with _switching:
        if on:
            if _recorders == 0:
                _saved_switch = sys.getswitchinterval()
                sys.setswitchinterval(min(_saved_switch, _SWITCH_SECONDS))
                _our_switch = sys.getswitchinterval()
            _recorders += 1
        else:
            _recorders -= 1
            if _recorders == 0 and sys.getswitchinterval() == _our_switch:
                sys.setswitchinterval(_saved_switch)


class SliceRecorder:
    """Records a run's slices in order, each while the next one is read.

    Where the store may be used from two threads, a slice is recorded on a thread of its
    own: writing the artifact and the store's statements run outside the interpreter (one
    statement per slice on SQLite, ``COPY`` on Postgres), so reading and rendering the next
    slice goes on meanwhile. At most one slice is being recorded; `record` waits for the one
    before, and raises what recording it raised. ``on_progress`` is called here, on the
    caller's thread, once a slice is recorded. A ``build_prompt`` that starts processes
    does so beside the recording thread: use the ``spawn`` or ``forkserver`` start method.
    """

    def __init__(self, ctx: RunContext, on_progress: Callable[[int], None] | None) -> None:
        """Record ``ctx``'s slices."""
        self._ctx = ctx
        self._on_progress = on_progress
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="batchor-ingest")
            if ctx.store.thread_safe
            else None
        )
        if self._pool is not None:
            _quick_switches(on=True)
        self._pending: tuple[Future[bool] | bool, Slice] | None = None
        self.accepted = 0
        """Items recorded so far."""

    def record(self, part: Slice) -> bool:
        """Start recording ``part`` once the slice before it is recorded; False (``part``
        left alone) if that one was not: another worker recorded it first."""
        if not self.finish():
            return False
        outcome: Future[bool] | bool
        if self._pool is not None:
            outcome = self._pool.submit(_record, self._ctx, part)
        else:
            outcome = _record(self._ctx, part)
        self._pending = (outcome, part)
        return True

    def finish(self) -> bool:
        """Wait for the slice being recorded; whether it was (True if there is none)."""
        if self._pending is None:
            return True
        outcome, part = self._pending
        self._pending = None
        recorded = outcome.result() if isinstance(outcome, Future) else outcome
        if recorded and part.items:
            self.accepted += len(part.items)
            if self._on_progress is not None:
                self._on_progress(part.ingested_count)
        return recorded

    def close(self) -> None:
        """Wait for the thread to end (after a slice in flight: an error recording it, while
        the caller is already raising its own, is logged, not lost)."""
        if self._pool is None:
            return
        try:
            pending, self._pending = self._pending, None
            if pending is not None and isinstance(pending[0], Future):
                error = pending[0].exception()
                if error is not None:
                    log.error(
                        "run %s: recording the slice before the error failed too: %s: %s",
                        self._ctx.run.run_id,
                        type(error).__name__,
                        error,
                    )
            self._pool.shutdown(wait=True)
        finally:
            self._pool = None
            _quick_switches(on=False)


def _record(ctx: RunContext, part: Slice) -> bool:
    """Make the slice's request lines durable, then record its items; False if another
    worker recorded this slice first."""
    if part.items:
        # The request bodies are durable before any item points at them.
        with ctx.artifacts.open_write(ctx.slice_key(part.number)) as fh:
            fh.write(part.requests)
    try:
        return ctx.store.add_items(
            ctx.run.pk,
            part.items,
            next_slice=part.number + 1 if part.items else part.number,
            ingested_count=part.ingested_count,
            checkpoint=part.checkpoint,
            complete=part.complete,
            source_parts=part.source_parts,
            forming=_form(ctx, part.items),
        )
    except DuplicateItemError as exc:
        where = next((it.seq for it in part.items if it.item_id == exc.item_id), None)
        raise DuplicateItemError(
            f"duplicate item_id {exc.item_id!r}: item {where} of the source repeats an "
            "earlier item",
            item_id=exc.item_id,
        ) from None


def _form(ctx: RunContext, batch: list[NewItem]) -> FormingItems | None:
    """Cut the slice's items into the plan, opening a forming batch for each new cut;
    where its items go (``None``, all pending, without a plan it can trust)."""
    plan = ctx.plan
    if plan is None or not batch:
        return None
    plan.add(batch)
    if not plan.valid:
        return None
    lease = time.time() + lease_seconds()
    first, last = batch[0].seq, batch[-1].seq
    segments = []
    for cut in plan.touching(first):
        if cut.batch_pk is None:  # numbered once sealed, so dissolving leaves no gap
            placeholder = f"{ctx.run.run_id}/forming-{uuid.uuid4().hex}"
            cut.batch_pk = ctx.store.open_batch(ctx.run.pk, placeholder, plan.owner, lease)
        segments.append((cut.batch_pk, max(cut.first, first), min(cut.last, last)))
    return FormingItems(plan.owner, lease, segments)
