"""Progress of a run as an orchestrator shows it: one line of counts, reported at an interval
so a two-hour wait shows signs of life without flooding the log."""

from __future__ import annotations

from dataclasses import dataclass

from batchor.results import RunSummary
from batchor.states import ItemStatus

DEFAULT_PROGRESS_EVERY = 60.0
"""Seconds between two progress reports during a wait, unless the caller says otherwise."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What a run has done so far.

    Attributes:
        run_id: The run's id.
        status: The run's status (``running``, ``paused``, ``completed``...).
        total: Items accepted so far.
        completed: Items completed.
        failed: Items failed for good.
        in_flight: Items in a batch that is being sent or is at the provider.
        waiting: Items not yet in a batch (new, or back for a retry).
        batches_live: Batches at the provider (running, or ended and not yet collected).
        cost_usd: The estimated cost so far (``None`` when the model's price is unknown).
    """

    run_id: str
    status: str
    total: int
    completed: int
    failed: int
    in_flight: int
    waiting: int
    batches_live: int
    cost_usd: float | None

    @classmethod
    def of(cls, summary: RunSummary) -> Progress:
        """The progress a summary shows."""
        return cls(
            run_id=summary.run_id,
            status=summary.status.value,
            total=summary.total,
            completed=summary.completed,
            failed=summary.failed,
            in_flight=summary.items.get(ItemStatus.QUEUED, 0)
            + summary.items.get(ItemStatus.SUBMITTED, 0),
            waiting=summary.items.get(ItemStatus.PENDING, 0),
            batches_live=summary.in_flight,
            cost_usd=summary.cost_usd,
        )

    def describe(self) -> str:
        """One log line, e.g. ``run r1 running: 120/500 done (3 failed), 377 in flight in 1
        batch at the provider, 3 waiting, $0.0123 so far``."""
        done = self.completed + self.failed
        batches = f"{self.batches_live} batch{'es' if self.batches_live != 1 else ''}"
        cost = "cost unknown" if self.cost_usd is None else f"${self.cost_usd:.4f} so far"
        return (
            f"run {self.run_id} {self.status}: {done}/{self.total} done ({self.failed} failed), "
            f"{self.in_flight} in flight in {batches} at the provider, {self.waiting} waiting, "
            f"{cost}"
        )
