"""How the ``google-genai`` SDK's errors become batchor's provider errors, and retrying the
transient ones."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from batchor.errors import ProviderAuthError, ProviderError, TransientProviderError
from batchor.providers.base import connection_errors

T = TypeVar("T")

# What an API key the service does not take is answered with (google.rpc.ErrorInfo reasons).
_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
    }
)


def status_of(exc: BaseException | None) -> int | None:
    """The HTTP status of an SDK ``APIError``, else ``None``."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _reasons(details: Any) -> set[str]:
    """The ``google.rpc.ErrorInfo`` reasons of an error body."""
    error = details.get("error") if isinstance(details, dict) else None
    listed = error.get("details") if isinstance(error, dict) else None
    return {
        detail["reason"]
        for detail in (listed if isinstance(listed, list) else [])
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str)
    }


def refused_key(exc: Any) -> bool:
    """Whether an SDK ``APIError`` says the API key was refused (401, a 403 for a caller
    without a key, or an ``API_KEY_*`` reason)."""
    code = status_of(exc) or 0
    unregistered = code == 403 and "unregistered callers" in (exc.message or "")
    return code == 401 or unregistered or bool(_reasons(exc.details) & _KEY_REASONS)


def translated(call: Callable[[], T]) -> T:
    """Run an SDK call, re-raising its errors as batchor's provider errors."""
    from google.genai import errors as genai_errors

    try:
        return call()
    except genai_errors.APIError as exc:
        code = status_of(exc) or 0
        message = exc.message or ""
        status = f" {exc.status}" if exc.status else ""
        text = f"provider answered HTTP {code}{status}: {message}"
        if refused_key(exc):
            raise ProviderAuthError(f"the provider refused the API key: {message}") from exc
        if code in (408, 429) or code >= 500:
            raise TransientProviderError(text) from exc
        raise ProviderError(text) from exc
    except connection_errors() as exc:
        raise TransientProviderError(f"provider unreachable: {type(exc).__name__}: {exc}") from exc


def retrying(call: Callable[[], T], retries: int, base: float = 0.5, cap: float = 30.0) -> T:
    """Call, retrying transient errors with exponential backoff and full jitter."""
    for attempt in range(retries + 1):
        try:
            return translated(call)
        except TransientProviderError:
            if attempt == retries:
                raise
            time.sleep(random.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")
