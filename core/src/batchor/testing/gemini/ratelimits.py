"""The Gemini API's per-model rate limits on ``generateContent``, as it answers them.

Each model has a bucket of requests and one of input tokens, each holding at most its
per-minute limit (`EmulatorLimits.requests_per_minute`, `EmulatorLimits.tokens_per_minute`)
and refilling continuously over `EmulatorLimits.rate_window` seconds. A request that does not
fit is answered 429 ``RESOURCE_EXHAUSTED`` as the Gemini API answers it: the quota wording,
then ``details`` with a ``google.rpc.Help``, a ``google.rpc.QuotaFailure`` naming the quota
and a ``google.rpc.RetryInfo`` whose ``retryDelay`` (a protobuf duration) says how long to
wait. The API sends no rate-limit headers and no ``Retry-After``: nor does the emulator.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.ratelimits import BucketSet
from batchor.testing.gemini.errors import QUOTA_MESSAGE, GoogleApiError

_TYPE = "type.googleapis.com/google.rpc."
_METRIC = "generativelanguage.googleapis.com/generate_content_paid_tier_"
_QUOTAS = {
    "requests": ("requests", "GenerateRequestsPerMinutePerProjectPerModel"),
    "tokens": ("input_token_count", "GenerateContentInputTokensPerModelPerMinute"),
}


def duration(seconds: float) -> str:
    """A protobuf ``Duration`` as JSON: seconds with up to nine fractional digits, ``s``."""
    text = f"{max(seconds, 0.0):.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def exhausted(model: str, kind: str, limit: int, wait: float) -> GoogleApiError:
    """The 429 of a request over the per-minute ``kind`` (``requests``, ``tokens``) quota of
    ``model``, to be retried after ``wait`` seconds."""
    metric, quota_id = _QUOTAS[kind]
    details: list[dict[str, Any]] = [
        {
            "@type": _TYPE + "Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {
            "@type": _TYPE + "QuotaFailure",
            "violations": [
                {
                    "quotaMetric": _METRIC + metric,
                    "quotaId": quota_id,
                    "quotaDimensions": {
                        "location": "global",
                        "model": model.removeprefix("models/"),
                    },
                    "quotaValue": str(limit),
                }
            ],
        },
        {"@type": _TYPE + "RetryInfo", "retryDelay": duration(wait)},
    ]
    message = (
        f"{QUOTA_MESSAGE}\n* Quota exceeded for metric: {_METRIC + metric}, limit: {limit}, "
        f"model: {model}\nPlease retry in {duration(wait)}."
    )
    return GoogleApiError(429, "RESOURCE_EXHAUSTED", message, details=details)


class GeminiRateLimiter:
    """Per-model request and input-token buckets under the live `EmulatorLimits`."""

    def __init__(
        self, limits: Callable[[], EmulatorLimits], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Enforce the limits ``limits()`` returns, timed by ``clock``."""
        self._limits = limits
        self._lock = threading.Lock()
        self._buckets = BucketSet(clock)

    def acquire(self, model: str, tokens: int) -> None:
        """Take one request and ``tokens`` input tokens of ``model``'s limits.

        Raises:
            GoogleApiError: 429 ``RESOURCE_EXHAUSTED`` if the request does not fit now
                (nothing is taken then).
        """
        limits = self._limits()
        rpm, tpm, window = limits.requests_per_minute, limits.tokens_per_minute, limits.rate_window
        with self._lock:
            buckets = self._buckets.refilled(model, rpm, tpm, window)
            if buckets.requests < 1.0:
                wait = (1.0 - buckets.requests) * window / rpm
                raise exhausted(model, "requests", rpm, wait)
            if buckets.tokens < tokens:
                wait = math.inf if tokens > tpm else (tokens - buckets.tokens) * window / tpm
                raise exhausted(model, "tokens", tpm, min(wait, window))
            buckets.requests -= 1.0
            buckets.tokens -= tokens
