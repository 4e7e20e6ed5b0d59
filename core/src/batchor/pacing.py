"""How long `Run.wait` pauses between two refreshes of a run.

The pause starts at the poll interval and doubles up to the longest while nothing changes
but what another worker's ingestion adds (items pending or queued, batches still forming):
every refresh counts the run's items, so a worker waiting out a long ingestion elsewhere
backs off instead of counting them again and again. A change of the run's status, of its
batches, or of its items sent or ended starts the pause again at the poll interval. While
webhooks flow, every pause is the longest: the webhooks move the run on.
"""

from __future__ import annotations

from batchor.results import RunSummary
from batchor.states import BatchStatus, ItemStatus

#: Seconds since the last webhook during which webhooks still count as flowing.
WEBHOOKS_FLOW_FOR = 900.0
#: What another worker's ingestion changes at every slice: no reason to refresh sooner.
_INGESTING = (ItemStatus.PENDING, ItemStatus.QUEUED)
_FORMING = BatchStatus.FORMING.value


def progress(summary: RunSummary) -> tuple[object, ...]:
    """What the pause watches for a change: the run's status, whether it is ingested
    whole, its batches by status and its items past packing, leaving out what grows while
    another worker ingests it (pending and queued items, batches still forming)."""
    return (
        summary.status,
        summary.ingest_complete,
        {status: n for status, n in summary.batches.items() if status != _FORMING},
        {status: n for status, n in summary.items.items() if status not in _INGESTING},
    )


class Pacer:
    """The pauses of one wait, from ``poll_interval`` up to ``max_poll_interval``."""

    def __init__(self, poll_interval: float, max_poll_interval: float) -> None:
        self._shortest = poll_interval
        self._longest = max_poll_interval
        self._pause = poll_interval
        self._seen: tuple[object, ...] | None = None

    def pause(self, summary: RunSummary, webhook_at: float | None, now: float) -> float:
        """The pause after a refresh that gave ``summary``, for a run a webhook last drove
        at ``webhook_at`` (``None``: never), at ``now``."""
        state = progress(summary)
        changed = state != self._seen
        self._seen = state
        self._pause = self._shortest if changed else min(self._pause * 2, self._longest)
        if webhook_at is not None and now - webhook_at < WEBHOOKS_FLOW_FOR:
            self._pause = self._longest
        return self._pause
