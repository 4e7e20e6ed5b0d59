"""The synchronous endpoints: ``POST /v1/responses``, ``/v1/chat/completions`` and
``/v1/embeddings`` answered at once, each request exactly as a batch line with the same body.

A request goes through the per-model rate limits (`batchor.testing.emulator.ratelimits`),
then the line fault knobs (`EmulatorFaults.pick_sync_fault`), then the renderer that answers
batch lines (`batchor.testing.emulator.replies`): the answer is that line's ``response``,
its status and body, with OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchor.testing.emulator.embeddings import EMBEDDINGS, split_inputs
from batchor.testing.emulator.errors import ApiError, bad_request
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.ratelimits import RateLimiter, retry_after
from batchor.testing.emulator.replies import ReplyFactory, extract_prompt
from batchor.testing.emulator.stats import EmulatorStats

if TYPE_CHECKING:
    from batchor.testing.emulator.server import RequestHandler

RESPONSES = "/v1/responses"
"""The Responses endpoint."""
CHAT_COMPLETIONS = "/v1/chat/completions"
"""The Chat Completions endpoint."""
SYNC_ENDPOINTS = (RESPONSES, CHAT_COMPLETIONS, EMBEDDINGS)
"""The endpoints served synchronously, as OpenAI spells them."""
REQUEST_ID_HEADER = "X-Client-Request-Id"
"""The request header whose value the ``line_fault`` callback gets as the custom_id."""
FAULT_RETRY_SECONDS = 0.02
"""The ``retry-after`` of a request faulted ``rate_limit`` (a short one: tests stay fast)."""
_OUTPUT_LIMITS = ("max_output_tokens", "max_completion_tokens", "max_tokens")


@dataclass(frozen=True)
class SyncAnswer:
    """The HTTP answer to one synchronous request."""

    status: int
    body: dict[str, Any]
    """The response body (an error body in OpenAI's shape unless ``status`` is 200)."""
    headers: dict[str, str]
    """OpenAI's ``x-ratelimit-*`` headers (and ``retry-after`` on a 429)."""


def checked_body(endpoint: str, payload: Any) -> dict[str, Any]:
    """The request body, refused (400) as the API refuses it before any model runs."""
    if not isinstance(payload, dict):
        raise bad_request(
            f"Invalid type for body: expected an object, but got {type(payload).__name__} instead.",
            code="invalid_type",
        )
    model = payload.get("model")
    if model is None:
        raise bad_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str):
        raise bad_request(
            f"Invalid type for 'model': expected a string, but got {type(model).__name__} instead.",
            param="model",
            code="invalid_type",
        )
    if payload.get("stream") and endpoint != EMBEDDINGS:
        raise bad_request(
            "Unsupported value: 'stream' is not supported by the emulator; leave it unset.",
            param="stream",
            code="unsupported_value",
        )
    return payload


def estimated_tokens(endpoint: str, body: Mapping[str, Any], prompt: str) -> int:
    """The tokens a request counts toward the token rate limit.

    As OpenAI counts them: the larger of the prompt's estimate (the emulator's usual token
    per four characters, as in the answer's usage) and the most output tokens it allows.
    """
    if endpoint == EMBEDDINGS:
        inputs = split_inputs(body.get("input"))
        if not inputs:
            return 1
        return sum((len(v) // 4 if isinstance(v, str) else len(v)) or 1 for v in inputs)
    instructions = body.get("instructions")
    extra = len(instructions) if isinstance(instructions, str) else 0
    estimate = (len(prompt) + extra) // 4 or 1
    for name in _OUTPUT_LIMITS:
        value = body.get(name)
        if type(value) is int:
            return max(estimate, value)
    return estimate


class SyncService:
    """Answers synchronous requests; shared by every connection of one emulator."""

    def __init__(
        self,
        stats: EmulatorStats,
        faults: Callable[[], EmulatorFaults],
        limits: Callable[[], EmulatorLimits],
    ) -> None:
        """Count into ``stats``; read the live fault knobs and limits on every request."""
        self._stats = stats
        self._faults = faults
        self._limiter = RateLimiter(limits)
        self._replies = ReplyFactory()
        self._lock = threading.Lock()  # the reply factory's schema cache is not thread-safe

    def answer(self, endpoint: str, payload: Any, request_id: str = "") -> SyncAnswer:
        """Answer one request on ``endpoint`` (an entry of `SYNC_ENDPOINTS`).

        Raises:
            ApiError: 400 for a body refused outright, 429 over the rate limits.
        """
        body = checked_body(endpoint, payload)
        prompt = extract_prompt(endpoint, body)
        try:
            headers = self._limiter.acquire(body["model"], estimated_tokens(endpoint, body, prompt))
        except ApiError:
            self._stats.record_sync_rate_limited()
            raise
        fault = self._faults().pick_sync_fault(request_id, body)
        with self._lock:
            renderer = self._replies.renderer(endpoint, body)
        line, _, input_tokens, output_tokens = renderer.answer(
            json.dumps(request_id), prompt, fault, int(time.time())
        )
        response = json.loads(line)["response"]
        status: int = response["status_code"]
        self._stats.record_sync(endpoint, input_tokens, output_tokens)
        if status == 429:
            headers.update(retry_after(FAULT_RETRY_SECONDS))
        return SyncAnswer(status, response["body"], headers)


def _serve(handler: RequestHandler, endpoint: str) -> None:
    service = handler.state.sync
    if service is None:
        raise ApiError(404, f"Invalid URL (POST {endpoint})")
    payload = handler.read_json()
    answer = service.answer(endpoint, payload, handler.headers.get(REQUEST_ID_HEADER) or "")
    handler.send_json(answer.status, answer.body, answer.headers)


def create_response(handler: RequestHandler, _: str, __: Mapping[str, list[str]]) -> None:
    """``POST /v1/responses``: a Response, as a batch line on that endpoint is answered."""
    _serve(handler, RESPONSES)


def create_chat_completion(handler: RequestHandler, _: str, __: Mapping[str, list[str]]) -> None:
    """``POST /v1/chat/completions``: a ChatCompletion, as a batch line is answered."""
    _serve(handler, CHAT_COMPLETIONS)


def create_embeddings(handler: RequestHandler, _: str, __: Mapping[str, list[str]]) -> None:
    """``POST /v1/embeddings``: a list of embeddings, as a batch line is answered."""
    _serve(handler, EMBEDDINGS)
