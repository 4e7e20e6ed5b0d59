"""Batches cut while ingesting: the packing plan of a run's fresh items.

Packing reads the pending items back from the store, in seq order, and cuts them into
batches toward the provider's limits. A run this process ingests whole has just seen every
one of those items in that order, so `PackPlan` makes the same cuts as the items are
ingested. Each cut is a ``forming`` batch in the store from its first slice on, and its
items are born in it (``queued``, never ``pending``: no row is rewritten to pack them); the
run's first packing writes each batch from the slices' byte ranges, without reading a row
back, and seals it ``prepared``.

It is a shortcut and nothing more: it holds a few numbers per batch (no state per item),
is lost with the process, and is dropped, its forming batches dissolved (their items back
to pending) and packing then reading the store as before, whenever the store may disagree
with it: an item that alone exceeds a limit (packing fails it), a slice another worker
recorded, a batch dissolved by another worker (its owner looked gone, or the run was
cancelled). A forming batch whose owner died is dissolved by the next worker to pack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchor.engine.context import log
from batchor.stores.records import NewItem

if TYPE_CHECKING:
    from batchor.engine.context import RunContext, RunSettings


@dataclass(slots=True)
class Cut:
    """One planned batch: the consecutive items ``first`` to ``last``, where their
    request lines are (``[slice, start, end]`` byte ranges, in order), and its forming
    batch in the store once opened."""

    first: int
    last: int
    size: int = 0
    tokens: int = 0
    ranges: list[list[int]] = field(default_factory=list)
    batch_pk: int | None = None


class PackPlan:
    """The batches packing would cut from the items ingested so far, cut as they come."""

    def __init__(self, settings: RunSettings, owner: str, next_seq: int = 1) -> None:
        self.owner = owner
        """Who forms the plan's batches in the store (`batchor.engine.claims.owner`)."""
        self._max_requests = settings.max_requests
        self._max_bytes = settings.max_bytes
        self._token_limit = settings.token_limit
        self.cuts: deque[Cut] = deque()
        """Whole batches, first first (the last one is whole once ingestion is complete)."""
        self.next_seq = next_seq
        """The seq of the item the plan expects next."""
        self.complete = False
        """The source is ingested whole: every cut is final."""
        self.valid = True
        """False once the plan can no longer be trusted (then it is dropped)."""
        self._open: Cut | None = None

    def add(self, items: Sequence[NewItem]) -> None:
        """Cut the next recorded items (a slice, in seq order) into the plan."""
        max_requests, max_bytes, token_limit = (
            self._max_requests,
            self._max_bytes,
            self._token_limit,
        )
        cut = self._open
        for item in items:
            seq, length, tokens = item.seq, item.req_length, item.est_tokens or 0
            too_large = length > max_bytes or (token_limit is not None and tokens > token_limit)
            if seq != self.next_seq or too_large:
                self.valid = False  # packing sets such items aside: leave it to packing
                return
            self.next_seq = seq + 1
            if cut is not None and not (
                seq - cut.first < max_requests
                and cut.size + length <= max_bytes
                and (token_limit is None or cut.tokens + tokens <= token_limit)
            ):
                self.cuts.append(cut)
                cut = None
            if cut is None:
                cut = Cut(seq, seq)
            cut.last = seq
            cut.size += length
            cut.tokens += tokens
            start, end = item.req_offset, item.req_offset + length
            last = cut.ranges[-1] if cut.ranges else None
            if last is not None and last[0] == item.req_slice and last[2] == start:
                last[2] = end
            else:
                cut.ranges.append([item.req_slice, start, end])
        self._open = cut

    def touching(self, first_seq: int) -> list[Cut]:
        """The cuts holding items from ``first_seq`` on (a slice's), first first."""
        found = [self._open] if self._open is not None else []
        for cut in reversed(self.cuts):
            if cut.last < first_seq:
                break
            found.append(cut)
        return found[::-1]

    def forming_batches(self) -> list[int]:
        """The primary keys of the plan's forming batches in the store."""
        cuts = [*self.cuts, *([self._open] if self._open is not None else [])]
        return [cut.batch_pk for cut in cuts if cut.batch_pk is not None]

    def finish(self) -> None:
        """The source is ingested whole: the open cut is the last batch."""
        if self._open is not None:
            self.cuts.append(self._open)
            self._open = None
        self.complete = True

    @property
    def ready(self) -> bool:
        """Whether packing may take its batches from the plan."""
        return self.valid and self.complete


def drop_plan(ctx: RunContext) -> None:
    """Stop trusting the context's plan, if it has one: its forming batches are dissolved
    (their items back to pending, for packing from the store)."""
    plan, ctx.plan = ctx.plan, None
    if plan is None:
        return
    for batch_pk in plan.forming_batches():
        moved = ctx.store.dissolve_batch(batch_pk)
        if moved is not None:
            log.info("a planned batch is dropped: its %d items are pending again", moved)
