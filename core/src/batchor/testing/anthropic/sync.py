"""The synchronous Messages endpoint, ``POST /v1/messages``: a request answered at once,
exactly as a Message Batch answers a request with the same ``params``.

A request is checked as a batch request's ``params`` are (a refusal is a 400
``invalid_request_error`` with the message an ``errored`` batch result would hold), goes
through the per-model rate limits (`ratelimits`), then the line fault knobs
(`AnthropicEmulatorFaults.pick_sync_fault`), then the replier that answers batch requests
(`replies.Replier`, its own instance: prompt cache and ids apart from the batches'). A
``succeeded`` result is answered 200 with its Message (``service_tier`` ``standard``); an
``errored`` one with the HTTP status of its error type (400, 500 ``api_error``, 529
``overloaded_error``) and its error body. Every answer carries the ``anthropic-ratelimit-*``
headers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchor.testing.anthropic.errors import (
    AnthropicApiError,
    invalid_request,
    request_too_large,
)
from batchor.testing.anthropic.faults import AnthropicEmulatorFaults
from batchor.testing.anthropic.limits import AnthropicEmulatorLimits
from batchor.testing.anthropic.params import check_params
from batchor.testing.anthropic.ratelimits import AnthropicRateLimiter
from batchor.testing.anthropic.replies import Replier, _prompt_chars
from batchor.testing.anthropic.wire import loads
from batchor.testing.emulator.bodies import BodyError
from batchor.testing.emulator.stats import EmulatorStats

if TYPE_CHECKING:
    from batchor.testing.anthropic.server import AnthropicRequestHandler

MESSAGES = "/v1/messages"
"""The synchronous endpoint, as `EmulatorStats.sync_answered` keys it."""
_STATUS = {"invalid_request_error": 400, "api_error": 500, "overloaded_error": 529}


@dataclass(frozen=True)
class SyncAnswer:
    """The HTTP answer to one synchronous request."""

    status: int
    body: dict[str, Any]
    """The Message (or, unless ``status`` is 200, the error body without its request id)."""
    headers: dict[str, str]
    """The ``anthropic-ratelimit-*`` headers."""


class AnthropicSyncService:
    """Answers ``POST /v1/messages``; shared by every connection of one emulator."""

    def __init__(
        self,
        stats: EmulatorStats,
        faults: Callable[[], AnthropicEmulatorFaults],
        limits: Callable[[], AnthropicEmulatorLimits],
    ) -> None:
        """Count into ``stats``; read the live fault knobs and limits on every request."""
        self._stats = stats
        self._faults = faults
        self._limiter = AnthropicRateLimiter(limits)
        self._replier = Replier(limits().min_cacheable_tokens)
        self._lock = threading.Lock()  # the replier's caches are not thread-safe

    def answer(self, payload: Any) -> SyncAnswer:
        """Answer one request body (parsed).

        Raises:
            AnthropicApiError: 400 for a body the API refuses, 429 over the rate limits.
        """
        if not isinstance(payload, dict):
            raise invalid_request("Input should be a valid dictionary")
        if payload.get("stream") is True:
            raise invalid_request("stream: the emulator does not stream responses; leave it unset")
        problem = check_params(payload)
        if problem is not None:
            raise invalid_request(problem)
        model = str(payload["model"])
        try:
            headers = self._limiter.acquire(model, _prompt_chars(payload) // 4 or 1)
        except AnthropicApiError:
            self._stats.record_sync_rate_limited()
            raise
        fault = self._faults().pick_sync_fault("", payload)
        with self._lock:
            result = self._replier.answer(payload, fault)
        if result["type"] != "succeeded":
            error = result["error"]
            self._stats.record_sync(MESSAGES, 0, 0)
            return SyncAnswer(_STATUS.get(error["error"]["type"], 500), error, headers)
        message: dict[str, Any] = result["message"]
        usage = message["usage"]
        usage["service_tier"] = "standard"
        tokens_in = (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        self._limiter.settle(model, usage["output_tokens"])
        self._stats.record_sync(MESSAGES, tokens_in, usage["output_tokens"])
        return SyncAnswer(200, message, headers)


def create_message(handler: AnthropicRequestHandler, _: str, __: Mapping[str, list[str]]) -> None:
    """``POST /v1/messages``: a Message, as a batch request with these ``params`` is
    answered."""
    state = handler.state
    limit = state.limits.max_message_bytes
    try:
        raw = handler.body.read_all(limit)
    except BodyError as exc:
        handler.close_connection = True
        raise request_too_large(limit) from exc
    try:
        payload = loads(raw)
    except ValueError as exc:
        raise invalid_request(f"There was an issue with the JSON body: {exc}") from exc
    answer = state.sync.answer(payload)
    body = answer.body
    if answer.status != 200:
        body = {**body, "request_id": handler.request_id}
    handler.send_json(answer.status, body, answer.headers)
