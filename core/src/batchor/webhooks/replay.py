"""The record of webhook ids a receiver has taken, to refuse a replayed delivery."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class SeenWebhooks:
    """The ``webhook-id`` of every delivery taken in the last ``keep_seconds``, in memory.

    A delivery is claimed before it is handled and released if handling failed, so the
    provider's retry of a failed delivery (same id) is taken, while a copy of a delivery
    that was handled, or is being handled, is refused. The record is bounded: past
    ``max_ids`` ids the oldest are forgotten first. It is per process: a copy sent to
    another receiver process is not recognised.

    Args:
        keep_seconds: How long an id is remembered; at least the signature tolerance
            (a replay older than that fails the timestamp check anyway).
        max_ids: The most ids remembered at once.
        clock: Seconds now (``time.monotonic`` by default).
    """

    def __init__(
        self,
        keep_seconds: float,
        max_ids: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start with no id seen."""
        self._keep = keep_seconds
        self._max = max_ids
        self._clock = clock
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, webhook_id: str) -> bool:
        """Take ``webhook_id``: True if it was not seen (it is now), False for a replay."""
        with self._lock:
            now = self._clock()
            self._forget(now)
            if webhook_id in self._ids:
                return False
            self._ids[webhook_id] = now
            while len(self._ids) > self._max:
                self._ids.popitem(last=False)
            return True

    def release(self, webhook_id: str) -> None:
        """Forget ``webhook_id`` (its handling failed: the provider's retry is welcome)."""
        with self._lock:
            self._ids.pop(webhook_id, None)

    def __len__(self) -> int:
        """How many ids are remembered."""
        with self._lock:
            self._forget(self._clock())
            return len(self._ids)

    def _forget(self, now: float) -> None:
        while self._ids:
            oldest, at = next(iter(self._ids.items()))
            if now - at <= self._keep:
                return
            del self._ids[oldest]
