"""Thread-safe counters of what the emulator was asked to do, for tests to assert on."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping


class EmulatorStats:
    """Counters updated by the emulator; every read returns a consistent snapshot."""

    def __init__(self) -> None:
        """Start with every counter at zero."""
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str]] = Counter()
        self._batch_metadata: list[dict[str, str]] = []
        self._lines_answered: Counter[str] = Counter()

    @property
    def calls(self) -> Counter[tuple[str, str]]:
        """HTTP calls received, keyed by ``(METHOD, route)``, e.g. ``("GET", "/v1/batches/{id}")``.

        Every call received counts, including those rejected (401, injected faults); calls
        to unknown routes are keyed by their literal path.
        """
        with self._lock:
            return Counter(self._calls)

    @property
    def total_calls(self) -> int:
        """Number of HTTP calls received, of any kind."""
        with self._lock:
            return sum(self._calls.values())

    @property
    def batches_created(self) -> int:
        """Number of batches actually created (rejected creates are not counted)."""
        with self._lock:
            return len(self._batch_metadata)

    def batches_by_metadata(self, key: str) -> Counter[str]:
        """Map each value of metadata ``key`` to the number of created batches carrying it.

        Batches without ``key`` in their metadata are not counted.
        """
        with self._lock:
            return Counter(meta[key] for meta in self._batch_metadata if key in meta)

    @property
    def lines_answered(self) -> Counter[str]:
        """How many times any batch answered each custom_id (success or error line).

        Lines written to the error file because the batch expired or was cancelled are not
        answers and are not counted.
        """
        with self._lock:
            return Counter(self._lines_answered)

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._calls.clear()
            self._batch_metadata.clear()
            self._lines_answered.clear()

    def record_call(self, method: str, route: str) -> None:
        """Count one HTTP call (used by the emulator)."""
        with self._lock:
            self._calls[(method, route)] += 1

    def record_batch(self, metadata: Mapping[str, str] | None) -> None:
        """Count one created batch with its metadata (used by the emulator)."""
        with self._lock:
            self._batch_metadata.append(dict(metadata or {}))

    def record_answers(self, custom_ids: Iterable[str]) -> None:
        """Count answered lines (used by the emulator)."""
        with self._lock:
            self._lines_answered.update(custom_ids)
