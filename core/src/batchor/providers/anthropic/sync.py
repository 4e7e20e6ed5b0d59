"""Synchronous sending of a Message Batch request (`FinishSync`): the ``params`` a batch
request line carries sent to the Messages API, ``POST /v1/messages``, at the standard price;
the answer written as the line the batch's results would hold for it, and the wait the
``anthropic-ratelimit-*`` headers ask for.

A results line is ``{"custom_id", "result"}``: a Message answers ``{"type": "succeeded",
"message": <Message>}``, an HTTP error ``{"type": "errored", "error": <the API's error
body>}`` (``{"type": "error", "error": {"type", "message"}}``), exactly what the batch's
results hold for a request that succeeded or errored, so the codec judges both alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from batchor.errors import ProviderAuthError, ProviderQuotaError, TransientProviderError
from batchor.providers.base import SyncResult

if TYPE_CHECKING:
    from anthropic import Anthropic

MESSAGES = "/v1/messages"
"""The Messages API's endpoint."""
NO_CREDIT = "credit balance is too low"
"""What a 400 says when the account has no credit left."""
MAX_WAIT = 60.0
"""The longest hold-off read from the rate-limit headers: the limits refill within a
minute, so a longer one says the clocks disagree."""
# The header that makes the SDK hand back the raw response (status, headers) of a call.
_RAW_RESPONSE = "X-Stainless-Raw-Response"
_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")
# Error types by HTTP status, for an error answer whose body is not the API's JSON.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """A batch request line's ``(custom_id, params)``.

    Raises:
        ValueError: it is not a batch request line.
    """
    try:
        parsed = orjson.loads(line)
        return str(parsed["custom_id"]), dict(parsed["params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a batch request line: {exc}") from None


def succeeded_line(custom_id: str, message: Any) -> bytes:
    """The results line of a request answered with ``message`` (a Message, as JSON)."""
    if not isinstance(message, dict):
        return errored_line(custom_id, 200, None, "the answer is not a Message")
    result = {"type": "succeeded", "message": message}
    return orjson.dumps({"custom_id": custom_id, "result": result})


def errored_line(custom_id: str, status: int, body: Any, message: str) -> bytes:
    """The results line of a request answered HTTP ``status`` with the error ``body`` (the
    API's error JSON; else one is made from ``message``)."""
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        kind = _ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    result = {"type": "errored", "error": body}
    return orjson.dumps({"custom_id": custom_id, "result": result})


def _reset_in(text: str | None, now: float) -> float:
    """Seconds from ``now`` until an ``-reset`` time (RFC 3339), ``0.0`` if unreadable."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.strip()).timestamp() - now
    except ValueError:
        return 0.0


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float:
    """Seconds to hold off before the next request: until the reset of a limit (requests,
    tokens, input or output tokens) with nothing remaining, else ``0.0``; at most
    `MAX_WAIT`."""
    wait = 0.0
    for limit in _LIMITS:
        remaining = headers.get(f"anthropic-ratelimit-{limit}-remaining")
        if remaining is not None and remaining.strip() == "0":
            reset = headers.get(f"anthropic-ratelimit-{limit}-reset")
            wait = max(wait, _reset_in(reset, now))
    return min(wait, MAX_WAIT)


def _api_message(exc: Any) -> str:
    """The API's own error message (``error.message``), else the SDK's."""
    return str(getattr(exc, "api_message", None) or exc.message)


def send_message(client: Anthropic, request_line: bytes) -> SyncResult:
    """Send one batch request line's ``params`` to ``POST /v1/messages`` (the SDK retries a
    429, 5xx or 529 as its ``max_retries`` and the ``retry-after`` say) and return the
    answer as a results line, with the hold-off the rate-limit headers ask for.

    Raises:
        TransientProviderError: no answer (timeout, connection).
        ProviderAuthError: the key was refused (401, 403).
        ProviderQuotaError: the account has no credit left (nothing more can be sent).
    """
    import anthropic

    custom_id, params = parse_request(request_line)
    raw: Any  # the SDK's raw response (status, headers, parse())
    try:
        raw = client.post(
            MESSAGES, cast_to=object, body=params, options={"headers": {_RAW_RESPONSE: "raw"}}
        )
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
        raise ProviderAuthError(
            f"the provider refused the API key: HTTP {exc.status_code}: {_api_message(exc)}"
        ) from exc
    except anthropic.APITimeoutError as exc:
        raise TransientProviderError(f"provider did not answer in time: {exc.message}") from exc
    except anthropic.APIConnectionError as exc:
        raise TransientProviderError(f"provider unreachable: {exc.message}") from exc
    except anthropic.APIStatusError as exc:
        text = _api_message(exc)
        if exc.status_code == 402 or exc.type == "billing_error" or NO_CREDIT in text.lower():
            raise ProviderQuotaError(f"provider answered HTTP {exc.status_code}: {text}") from exc
        line = errored_line(custom_id, exc.status_code, exc.body, text)
        return SyncResult(line, rate_limit_wait(exc.response.headers, time.time()))
    line = succeeded_line(custom_id, raw.parse())
    return SyncResult(line, rate_limit_wait(raw.headers, time.time()))
