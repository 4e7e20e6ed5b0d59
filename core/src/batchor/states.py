"""Run, item and batch statuses, and which of them are terminal or live."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its life. ``completed``, ``completed_with_failures`` and
    ``cancelled`` are terminal."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the run will never change again."""
        return self in _TERMINAL_RUN


_TERMINAL_RUN = frozenset(
    {RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_FAILURES, RunStatus.CANCELLED}
)


class ItemStatus(StrEnum):
    """An item's life: ``pending -> queued -> submitted -> completed | failed``, or
    ``cancelled`` when its run is cancelled before it was answered.

    A retryable failure returns the item to ``pending`` with one more attempt charged.
    """

    PENDING = "pending"
    QUEUED = "queued"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the item has its final outcome."""
        return self in (ItemStatus.COMPLETED, ItemStatus.FAILED, ItemStatus.CANCELLED)


class BatchStatus(StrEnum):
    """A provider batch as batchor tracks it.

    ``prepared -> uploaded -> submitted -> ended -> collected``; the provider's own status
    (validating, in_progress, ...) is kept beside it while the batch is ``submitted``.
    A batch cut while its items are ingested starts ``forming``: its items are recorded in
    it as they arrive, and the worker cutting it seals it ``prepared`` once its input file
    is written (or it is dissolved, its items back to pending, if that worker is gone).
    """

    FORMING = "forming"
    PREPARED = "prepared"
    UPLOADED = "uploaded"
    SUBMITTED = "submitted"
    ENDED = "ended"
    COLLECTED = "collected"

    @property
    def is_live(self) -> bool:
        """Whether the batch still needs work (submission, polling or collection)."""
        return self is not BatchStatus.COLLECTED


class PauseCode(StrEnum):
    """Why a run is paused, as a code (`RunSummary.pause_code`); the pause reason says it
    in words."""

    REQUEST = "request"
    """Paused by a user (`Run.pause`, ``batchor pause``)."""
    BUDGET = "budget"
    """The next batch's projected cost would take the run past its spending cap."""
    QUOTA = "quota"
    """The provider account is out of quota (``insufficient_quota``)."""
    CONFLICT = "conflict"
    """The provider holds a batch under one of the run's keys with other requests."""
