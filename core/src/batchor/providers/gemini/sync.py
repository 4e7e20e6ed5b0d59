"""Synchronous sending of a batch request (`FinishSync`) on Gemini: the
``GenerateContentRequest`` a batch input line carries, posted to
``models/{model}:generateContent``, and its answer written as the line a batch's results file
would hold for it.

The wire format, as the Gemini API has it:

- A batch input line is ``{"key": ..., "request": GenerateContentRequest}``; its results
  line is ``{"key": ..., "response": GenerateContentResponse}`` or ``{"key": ..., "error":
  google.rpc.Status}`` (``code`` the gRPC number). The synchronous endpoint answers the same
  ``GenerateContentResponse``, or an HTTP error ``{"error": {"code": <HTTP status>,
  "message", "status": <canonical name>, "details"}}``.
- The Gemini API sends no rate-limit headers (no ``x-ratelimit-*``) and no ``Retry-After``:
  a request over a limit is answered 429 ``RESOURCE_EXHAUSTED`` whose ``details`` carry a
  ``google.rpc.RetryInfo`` with the ``retryDelay`` to wait (a protobuf duration such as
  ``"22s"`` or ``"8.941621227s"``) and a ``google.rpc.QuotaFailure`` naming the quota
  (``...PerMinute...`` or ``...PerDay...``). The ``google-genai`` SDK's own retries ignore
  both (exponential backoff with jitter), so `GeminiTransport.send_sync` retries itself.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from batchor.errors import ProviderAuthError, TransientProviderError
from batchor.providers.base import SyncResult, connection_errors
from batchor.providers.gemini.codec import rpc_name, rpc_number
from batchor.providers.gemini.errors import refused_key, status_of

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
# Answers worth sending again (rate limits, overload, server errors), and the longest a
# retry waits (as the openai SDK caps a retry-after).
_RETRIED = frozenset({408, 429, 500, 502, 503, 504})
_MAX_WAIT = 60.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
# The canonical status of an HTTP error that names none (google.rpc.Code's HTTP mapping).
_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """A batch input line's ``(key, request)``.

    Raises:
        ValueError: it is not a batch input line.
    """
    try:
        parsed = orjson.loads(line)
        key, request = parsed["key"], parsed["request"]
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a batch input line: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError("not a batch input line: its request is not an object")
    return str(key), dict(request)


def generate_path(model: str) -> str:
    """The REST method a request for ``model`` is posted to (relative to the API version)."""
    name = model if model.startswith("models/") else f"models/{model}"
    return f"{name}:generateContent"


def response_line(key: str, response: Any) -> bytes:
    """The results line a batch would hold for a request answered ``response``."""
    return orjson.dumps({"key": key, "response": response})


def error_line(key: str, http_status: int, body: Any) -> bytes:
    """The results line a batch would hold for a request the API answered with an HTTP
    error: the error body's ``google.rpc.Status`` with the gRPC code (the HTTP error names
    the canonical status; a body without one is read from the HTTP status)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    status = error.get("status")
    number = rpc_number(status) if isinstance(status, str) else None
    if number is None:
        fallback = "INTERNAL" if http_status >= 500 else "UNKNOWN"
        number = rpc_number(_BY_HTTP.get(http_status, fallback))
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"HTTP {http_status} {rpc_name(number)}"
    status_json: dict[str, Any] = {"code": number, "message": message}
    details = error.get("details")
    if isinstance(details, list) and details:
        status_json["details"] = details
    return orjson.dumps({"key": key, "error": status_json})


def duration_seconds(text: Any) -> float | None:
    """A protobuf ``Duration`` as JSON (``"22s"``, ``"0.5s"``) in seconds, else ``None``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    return float(match.group(1)) if match else None


def _details(body: Any) -> list[Any]:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return details if isinstance(details, list) else []


def retry_delay(body: Any, headers: Mapping[str, str] | None = None) -> float | None:
    """Seconds an error answer asks to wait before trying again: its ``RetryInfo``'s
    ``retryDelay``, else a ``retry-after`` header in seconds (the Gemini API sends none;
    a proxy might), else ``None``."""
    for detail in _details(body):
        if isinstance(detail, dict) and detail.get("@type") == RETRY_INFO:
            delay = duration_seconds(detail.get("retryDelay"))
            if delay is not None:
                return delay
    raw = None if headers is None else headers.get("retry-after")
    try:
        return max(float(raw), 0.0) if raw is not None else None
    except ValueError:
        return None


def daily_quota(body: Any) -> bool:
    """Whether a 429 names a per-day quota (waiting minutes does not lift it)."""
    for detail in _details(body):
        if isinstance(detail, dict) and detail.get("@type") == QUOTA_FAILURE:
            violations = detail.get("violations")
            for violation in violations if isinstance(violations, list) else []:
                quota = violation.get("quotaId") if isinstance(violation, dict) else None
                if isinstance(quota, str) and "PerDay" in quota:
                    return True
    return False


def send_request(post: Callable[[], Any], key: str, retries: int) -> SyncResult:
    """Send one request (``post`` makes the SDK call and returns its HTTP response) and
    return its answer as a batch results line. An answer of 408, 429 or 5xx is sent again up
    to ``retries`` times, waiting as its ``RetryInfo`` says, else backing off exponentially
    (at most a minute each; a per-day quota is not waited for). The wait returned is a
    final 429's retry delay (the API sends no rate-limit headers, so a successful answer
    asks for none).

    Raises:
        TransientProviderError: no answer (timeout, connection), or one that is not JSON.
        ProviderAuthError: the key was refused.
    """
    from google.genai import errors as genai_errors

    for attempt in range(retries + 1):
        try:
            answer = post()
        except genai_errors.APIError as exc:
            if refused_key(exc):
                message = exc.message or ""
                raise ProviderAuthError(f"the provider refused the API key: {message}") from exc
            code = status_of(exc) or 500
            delay = retry_delay(exc.details, getattr(exc.response, "headers", None))
            daily = code == 429 and daily_quota(exc.details)
            if code in _RETRIED and attempt < retries and not daily:
                backoff = random.uniform(0, min(_MAX_WAIT, 0.5 * 2**attempt))
                time.sleep(min(delay if delay is not None else backoff, _MAX_WAIT))
                continue
            wait = (delay or 0.0) if code == 429 else 0.0
            return SyncResult(error_line(key, code, exc.details), wait)
        except connection_errors() as exc:
            name = type(exc).__name__
            raise TransientProviderError(f"provider unreachable: {name}: {exc}") from exc
        try:
            body = json.loads(answer.body or "")
        except ValueError as exc:
            raise TransientProviderError("the provider answered with no JSON") from exc
        return SyncResult(response_line(key, body))
    raise AssertionError("unreachable")
