"""The synchronous endpoint: ``POST /{version}/models/{model}:generateContent`` answered at
once, each request exactly as a batch line carrying it is answered.

A request is checked as a batch line's (a refused one is a 400 ``INVALID_ARGUMENT`` with the
message its error line would carry), then goes through the per-model rate limits
(`batchor.testing.gemini.ratelimits`: 429 ``RESOURCE_EXHAUSTED`` with a ``RetryInfo``), then
the line fault knobs (`EmulatorFaults.pick_sync_fault`, with ``""`` for the key: a
synchronous request carries none), then the code that answers batch lines
(`batchor.testing.gemini.replies.answer`): a reply is answered 200 with the
``GenerateContentResponse`` a results line would hold, an error line's ``google.rpc.Status``
as the HTTP error the API answers it with. The Gemini API sends no rate-limit headers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.gemini.errors import GRPC_CODES, GoogleApiError, invalid_argument, not_found
from batchor.testing.gemini.faults import GeminiFaults
from batchor.testing.gemini.lines import LineRefused, plan_request
from batchor.testing.gemini.ratelimits import GeminiRateLimiter, duration
from batchor.testing.gemini.replies import Replier, answer, tokens

if TYPE_CHECKING:
    from batchor.testing.gemini.server import GeminiRequestHandler

GENERATE = "/{version}/models/{model}:generateContent"
"""The route of the synchronous endpoint (its key in `EmulatorStats.sync_answered`)."""
FAULT_RETRY_SECONDS = 0.02
"""The ``retryDelay`` of a request faulted ``rate_limit`` (a short one: tests stay fast)."""
_NAMES = {code: name for name, code in GRPC_CODES.items()}
_HTTP = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""The HTTP status the API answers each canonical status with (else 500)."""


@dataclass(frozen=True)
class SyncAnswer:
    """The HTTP answer to one synchronous request."""

    status: int
    body: dict[str, Any]
    """A ``GenerateContentResponse``, or Google's error body unless ``status`` is 200."""


class GeminiSyncService:
    """Answers ``generateContent`` requests; shared by every connection of one emulator."""

    def __init__(
        self,
        stats: EmulatorStats,
        faults: Callable[[], GeminiFaults],
        limits: Callable[[], EmulatorLimits],
    ) -> None:
        """Count into ``stats``; read the live fault knobs and limits on every request."""
        self._stats = stats
        self._faults = faults
        self._limiter = GeminiRateLimiter(limits)
        self._repliers: dict[str, Replier] = {}
        self._lock = threading.Lock()  # a replier's schema cache is not thread-safe

    def answer(self, model: str, payload: Any) -> SyncAnswer:
        """Answer one request for ``model`` (``models/...``).

        Raises:
            GoogleApiError: 400 for a request the API refuses, 429 over the rate limits.
        """
        if not isinstance(payload, dict):
            raise invalid_argument("Invalid JSON payload received. Expected an object.")
        try:
            plan = plan_request(payload)
        except LineRefused as exc:
            raise invalid_argument(str(exc)) from None
        try:
            self._limiter.acquire(model, tokens(len(plan.prompt) + plan.other_chars))
        except GoogleApiError:
            self._stats.record_sync_rate_limited()
            raise
        fault = self._faults().pick_sync_fault("", payload)
        with self._lock:
            replier = self._repliers.setdefault(model, Replier(model))
            line = answer(replier, None, payload, fault)
        error = line.get("error")
        if isinstance(error, dict):
            self._stats.record_sync(GENERATE, 0, 0)
            raise _http_error(error)
        response: dict[str, Any] = line["response"]
        usage = response.get("usageMetadata") or {}
        self._stats.record_sync(
            GENERATE,
            int(usage.get("promptTokenCount") or 0),
            int(usage.get("candidatesTokenCount") or 0),
        )
        return SyncAnswer(200, response)


def _http_error(status: Mapping[str, Any]) -> GoogleApiError:
    """The HTTP error the API answers with where a results line holds ``status``."""
    name = _NAMES.get(int(status.get("code") or 2), "UNKNOWN")
    details: list[dict[str, Any]] | None = None
    if name == "RESOURCE_EXHAUSTED":
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
        details = [retry | {"retryDelay": duration(FAULT_RETRY_SECONDS)}]
    return GoogleApiError(_HTTP.get(name, 500), name, str(status.get("message")), details=details)


def generate_content(handler: GeminiRequestHandler, model_id: str, _: Any) -> None:
    """``POST /{version}/models/{model}:generateContent``: a ``GenerateContentResponse``, as
    a batch line carrying the same request is answered."""
    state = handler.state
    payload = handler.read_json()
    if not model_id.startswith(state.model_prefixes):
        version = handler.path.lstrip("/").split("/", 1)[0]
        raise not_found(
            f"models/{model_id} is not found for API version {version}, or is not supported "
            "for generateContent. Call ListModels to see the list of available models and "
            "their supported methods."
        )
    answered = state.sync.answer(f"models/{model_id}", payload)
    handler.send_json(answered.status, answered.body)
