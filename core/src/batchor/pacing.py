"""How long `Run.wait` pauses between two refreshes of a run.

The pause starts at the poll interval and doubles up to the longest while nothing changes
but what another worker's ingestion adds (items pending or queued, batches still forming),
so a worker waiting out a long ingestion elsewhere backs off instead of reading the run again
and again. A change of the run's status, of its batches (items are sent in them), or of its
items ended (the run's done tick: collected, answered synchronously, failed, cancelled)
starts the pause again at the poll interval. None of that counts the run's items, a scan of
them all. While webhooks flow, every pause is the longest: the webhooks move the run on.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from batchor.errors import ConfigurationError
from batchor.states import BatchStatus
from batchor.stores.records import RunRecord

#: Seconds since the last webhook during which webhooks still count as flowing.
WEBHOOKS_FLOW_FOR = 900.0
#: What another worker's ingestion adds at every slice: no reason to refresh sooner.
_FORMING = BatchStatus.FORMING.value


def progress(run: RunRecord, batches: Mapping[str, int]) -> tuple[object, ...]:
    """What the pause watches for a change, given the run's row and its batches by status:
    the run's status, whether it is ingested whole, its batches past forming, and how often
    items ended (the done tick, which every transaction that ends items moves on)."""
    return (
        run.status,
        run.ingest_complete,
        {status: n for status, n in batches.items() if status != _FORMING},
        run.done_tick,
    )


def wait_arguments(
    timeout: float | None, poll_interval: float, max_poll_interval: float, progress_every: float
) -> tuple[float | None, float, float, float]:
    """The arguments of `Run.wait`, checked before it refreshes anything, as floats (any
    real number is taken: ``numpy.float32``, ``Fraction``...).

    Raises:
        ConfigurationError: an argument is not a finite number of seconds, ``timeout`` or
            ``progress_every`` is negative, or a pause is not positive.
    """
    checks = [
        ("timeout", timeout, False),
        ("progress_every", progress_every, False),
        ("poll_interval", poll_interval, True),
        ("max_poll_interval", max_poll_interval, True),
    ]
    for name, value, positive in checks:
        if value is None and name == "timeout":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            bound = "more than 0" if positive else "0 or more"
            raise ConfigurationError(
                f"wait: {name} must be a number of seconds, {bound}: {value!r}"
            )
    return (
        None if timeout is None else float(timeout),
        float(poll_interval),
        float(max_poll_interval),
        float(progress_every),
    )


class Pacer:
    """The pauses of one wait, from ``poll_interval`` up to ``max_poll_interval`` (never
    longer: a ``poll_interval`` above it is taken as ``max_poll_interval``)."""

    def __init__(self, poll_interval: float, max_poll_interval: float) -> None:
        self._shortest = min(poll_interval, max_poll_interval)
        self._longest = max_poll_interval
        self._pause = self._shortest
        self._seen: tuple[object, ...] | None = None

    def pause(self, state: tuple[object, ...], webhook_at: float | None, now: float) -> float:
        """The pause after a refresh that left the run in ``state`` (see `progress`), for a
        run a webhook last drove at ``webhook_at`` (``None``: never), at ``now``."""
        changed = state != self._seen
        self._seen = state
        self._pause = self._shortest if changed else min(self._pause * 2, self._longest)
        if webhook_at is not None and now - webhook_at < WEBHOOKS_FLOW_FOR:
            self._pause = self._longest
        return self._pause
