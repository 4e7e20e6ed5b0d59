"""The `StateStore` port's operations for finishing the stragglers synchronously (see
`batchor.engine.finish`): compare-and-set steps, so that any number of workers enter finish
mode once, send each item once, and apply each answer once."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from batchor.stores.records import ItemOutcome, PendingItem


class FinishStore(Protocol):
    """Finishing the stragglers: part of `StateStore`."""

    def mark_stragglers(self, run_pk: int, at: float | None) -> float | None:
        """Record since when the run has few enough items left to finish synchronously
        (compare-and-set: the first time stands), or with ``None`` that it no longer has;
        returns the time recorded."""
        ...

    def enter_finish(self, run_pk: int) -> bool:
        """Put the run in finish mode; True for the one caller that moved it."""
        ...

    def claim_sync(
        self, run_pk: int, owner: str, lease: float, *, steal_from: str | None = None
    ) -> bool:
        """Claim or renew sending the run's items synchronously (one worker at a time);
        taking it over hands the items left in flight by the last holder back to
        ``pending``."""
        ...

    def end_sync(self, run_pk: int, owner: str, *, capped: bool = False) -> None:
        """Give up that claim; with ``capped``, end synchronous sending for good."""
        ...

    def claim_sync_items(self, run_pk: int, limit: int) -> list[PendingItem]:
        """Take up to ``limit`` pending items to send synchronously (``submitted``, no
        batch)."""
        ...

    def release_sync_items(self, run_pk: int, seqs: Collection[int]) -> int:
        """Hand items taken but not sent back to ``pending`` (no attempt charged)."""
        ...

    def apply_sync(
        self,
        run_pk: int,
        outcomes: Sequence[ItemOutcome],
        billed: tuple[int, int],
        max_attempts: int,
    ) -> int:
        """Apply synchronous answers to items still in flight synchronously (at most once
        each) and add the tokens billed to the run's synchronous usage."""
        ...

    def take_over_stopped(self, run_pk: int, batch_pk: int) -> int:
        """Take a stopped batch's unanswered items out of it, back to ``pending``, to be
        sent synchronously."""
        ...

    def record_duplicates(self, run_pk: int, batch_pk: int, seqs: Collection[int]) -> int:
        """Count and record the batch's answered lines for items taken out of it."""
        ...

    def duplicate_count(self, run_pk: int) -> int:
        """Duplicate answers recorded over the run's batches."""
        ...
