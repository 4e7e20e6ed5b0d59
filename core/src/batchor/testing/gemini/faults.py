"""Fault injection knobs for the Gemini Batch Mode emulator.

`GeminiFaults` extends the OpenAI emulator's `EmulatorFaults` (same seeded, thread-safe
``take_*`` consumption, same line knobs) with what the Gemini emulator adds: 429 and 503 on any
route, a create that is recorded but never answered, and the shape of a failed batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from batchor.testing.emulator.faults import EmulatorFaults

RouteFault = Literal["server_error", "rate_limit", "unavailable"]
"""How a faulted HTTP call is answered: 500 ``INTERNAL``, 429 ``RESOURCE_EXHAUSTED`` or 503
``UNAVAILABLE``."""


@dataclass
class GeminiFaults(EmulatorFaults):
    """Faults the Gemini emulator injects; every knob defaults to off.

    Route keys are ``"METHOD template"`` as in `EmulatorStats.calls`, with the API version
    written ``{version}`` (it matches ``v1`` and ``v1beta`` alike), e.g.
    ``"POST /{version}/models/{model}:batchGenerateContent"``, ``"GET /{version}/batches/{name}"``
    or ``"POST /upload/{version}/files"`` (the start of an upload; its byte transfers are
    ``"POST /upload/{version}/files?upload_id"``). See `batchor.testing.gemini.routes`.

    What the inherited knobs do here:

    * ``line_server_error_rate``, ``line_rate_limit_rate``, ``line_invalid_json_rate`` and
      ``line_fault`` (called with ``(key, request)``): a line answered with an ``error``
      (``INTERNAL`` 13, ``RESOURCE_EXHAUSTED`` 8, or for ``bad_request`` ``INVALID_ARGUMENT``
      3), or with reply text that is not valid JSON (``invalid_json``) or valid JSON that does
      not fit the requested schema (``schema_mismatch``).
    * ``create_insufficient_quota_count``, ``create_rate_limit_count``: the next creates get
      429 ``RESOURCE_EXHAUSTED`` (quota wording, then rate wording); ``create_reject_count``:
      400 ``INVALID_ARGUMENT``. Nothing is created.
    * ``route_server_error_counts``, ``http_server_error_rate``, ``http_server_error_count``:
      500 ``INTERNAL`` before anything else happens; ``latency`` is added to every call.
    * ``fail_token_limit_count``: the next batches end ``BATCH_STATE_FAILED`` with
      ``RESOURCE_EXHAUSTED`` (too many enqueued tokens); ``fail_batch_count``: with
      `fail_batch_status` (``fail_batch_errors`` is OpenAI's and is not used).
    * ``expire_count``: the next batches answer the first half of their lines, then end
      ``BATCH_STATE_EXPIRED`` (without an output file unless `expire_keeps_output`).
    * ``hold_count``: the next batches answer the first `hold_fraction` of their lines, then
      stay ``BATCH_STATE_RUNNING`` until they are cancelled; cancelled, they end
      ``BATCH_STATE_CANCELLED`` with the lines they answered in their output file.
    * ``line_fault`` also picks the fault of a synchronous ``generateContent`` request
      (called with ``("", request)``: it carries no key).
    * ``create_response_delay``: the create sleeps after recording the batch, before answering.
    * ``output_file_delay``: a finished batch's output file answers 403 for that many seconds.
    * ``line_rewrite``: called with every output line (parsed); returns the line to write
      instead (a dict, raw text, or ``None`` to leave it out).
    * ``shuffle_output``: output lines in a shuffled order (within slices of 2,000 lines).
    """

    route_rate_limit_counts: dict[str, int] = field(default_factory=dict)
    """The next N calls to a route are answered 429 ``RESOURCE_EXHAUSTED``."""
    route_unavailable_counts: dict[str, int] = field(default_factory=dict)
    """The next N calls to a route are answered 503 ``UNAVAILABLE``."""
    create_drop_connection_count: int = 0
    """The next N batch creates record the batch (it runs), then close the connection without
    answering: the client sees an error although the batch exists."""
    fail_batch_status: tuple[str, str] = (
        "INTERNAL",
        "The batch could not be processed because of an internal error.",
    )
    """``(canonical status, message)`` of the operation ``error`` of a batch failed by
    ``fail_batch_count``."""
    expire_keeps_output: bool = False
    """Give an expired batch an output file with the lines it answered (the real service
    documents that an expired batch has no results to retrieve)."""

    def take_route_fault(self, method: str, route: str) -> RouteFault | None:
        """Decide whether this call to ``route`` is faulted (consumes one count), and how."""
        if self.take_route_server_error(method, route):
            return "server_error"
        key = f"{method} {route}"
        pairs: tuple[tuple[dict[str, int], RouteFault], ...] = (
            (self.route_rate_limit_counts, "rate_limit"),
            (self.route_unavailable_counts, "unavailable"),
        )
        with self._lock:
            for counts, fault in pairs:
                if counts.get(key, 0) > 0:
                    counts[key] -= 1
                    return fault
        return None

    def take_create_drop_connection(self) -> bool:
        """Decide whether the current batch create goes unanswered (consumes the count)."""
        with self._lock:
            if self.create_drop_connection_count > 0:
                self.create_drop_connection_count -= 1
                return True
            return False
