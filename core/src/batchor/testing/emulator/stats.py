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
        self._webhooks_sent: Counter[str] = Counter()
        self._webhooks_delivered: Counter[str] = Counter()
        self._sync_answered: Counter[str] = Counter()
        self._sync_tokens = [0, 0]
        self._sync_rate_limited = 0

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

    @property
    def sync_answered(self) -> Counter[str]:
        """Synchronous requests answered, keyed by endpoint (e.g. ``"/v1/responses"``).

        A request counts once the model answers it, successfully or with a faulted error;
        requests refused before (401, 400, a 429 for the rate limits, injected HTTP faults)
        do not.
        """
        with self._lock:
            return Counter(self._sync_answered)

    @property
    def sync_tokens(self) -> tuple[int, int]:
        """``(input, output)`` tokens billed for successful synchronous answers (at the
        synchronous price, unlike a batch's)."""
        with self._lock:
            return self._sync_tokens[0], self._sync_tokens[1]

    @property
    def sync_rate_limited(self) -> int:
        """Synchronous requests refused 429 because they exceeded the rate limits."""
        with self._lock:
            return self._sync_rate_limited

    @property
    def webhooks_sent(self) -> Counter[str]:
        """Webhook deliveries attempted, by event type (``"batch.completed"``, ...); each
        retry of an event counts again."""
        with self._lock:
            return Counter(self._webhooks_sent)

    @property
    def webhooks_delivered(self) -> Counter[str]:
        """Webhook events answered 2xx by the receiver, by event type."""
        with self._lock:
            return Counter(self._webhooks_delivered)

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._webhooks_sent.clear()
            self._webhooks_delivered.clear()
            self._calls.clear()
            self._batch_metadata.clear()
            self._lines_answered.clear()
            self._sync_answered.clear()
            self._sync_tokens = [0, 0]
            self._sync_rate_limited = 0

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

    def record_sync(self, endpoint: str, input_tokens: int, output_tokens: int) -> None:
        """Count one answered synchronous request and its billed tokens (used by the
        emulator)."""
        with self._lock:
            self._sync_answered[endpoint] += 1
            self._sync_tokens[0] += input_tokens
            self._sync_tokens[1] += output_tokens

    def record_sync_rate_limited(self) -> None:
        """Count one synchronous request refused for the rate limits (used by the emulator)."""
        with self._lock:
            self._sync_rate_limited += 1

    def record_webhook(self, event_type: str, delivered: bool) -> None:
        """Count one webhook delivery attempt, and the event if it was answered 2xx (used by
        the emulator)."""
        with self._lock:
            self._webhooks_sent[event_type] += 1
            if delivered:
                self._webhooks_delivered[event_type] += 1
