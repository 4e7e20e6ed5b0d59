"""OpenAI's per-model request and token rate limits on the synchronous endpoints.

Each model has two buckets, one of requests and one of tokens, each holding at most its
per-minute limit and refilling continuously (the whole limit over `EmulatorLimits.rate_window`
seconds), as OpenAI's limits behave. A request takes one request and its estimated tokens;
one that does not fit is answered 429 ``rate_limit_exceeded`` with a ``retry-after``, and
every answer carries OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from batchor.testing.emulator.errors import ApiError
from batchor.testing.emulator.limits import EmulatorLimits

ORGANIZATION = "org-emulator"
"""The organization named in rate-limit messages."""
_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."


def duration(seconds: float) -> str:
    """A wait as OpenAI's ``x-ratelimit-reset-*`` headers spell it: ``"20ms"``, ``"1.5s"``,
    ``"6m0s"``, ``"1h2m3s"``."""
    millis = math.ceil(max(seconds, 0.0) * 1000 - 1e-6)
    if millis < 1000:
        return f"{millis}ms" if millis else "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    text = f"{secs}s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return text


@dataclass
class _Buckets:
    """One model's request and token buckets."""

    requests: float
    tokens: float
    at: float


class BucketSet:
    """Each model's request and token buckets, refilled continuously over the rate window,
    under limits that may change between calls (new limits: every bucket starts full). The
    emulators' rate limiters keep one under their own lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Buckets timed by ``clock``."""
        self._clock = clock
        self._buckets: dict[str, _Buckets] = {}
        self._config: tuple[int, int, float] | None = None

    def refilled(self, model: str, rpm: int, tpm: int, window: float) -> _Buckets:
        """``model``'s buckets, refilled up to now under these limits."""
        if self._config != (rpm, tpm, window):
            self._config = (rpm, tpm, window)
            self._buckets.clear()
        now = self._clock()
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = self._buckets[model] = _Buckets(float(rpm), float(tpm), now)
        elapsed = max(now - buckets.at, 0.0)
        buckets.requests = min(float(rpm), buckets.requests + elapsed * rpm / window)
        buckets.tokens = min(float(tpm), buckets.tokens + elapsed * tpm / window)
        buckets.at = now
        return buckets


class RateLimiter:
    """Per-model request and token buckets under the live `EmulatorLimits`."""

    def __init__(
        self, limits: Callable[[], EmulatorLimits], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Enforce the limits ``limits()`` returns, timed by ``clock``."""
        self._limits = limits
        self._lock = threading.Lock()
        self._buckets = BucketSet(clock)

    def acquire(self, model: str, tokens: int) -> dict[str, str]:
        """Take one request and ``tokens`` tokens of ``model``'s limits; return the
        ``x-ratelimit-*`` headers of the answer.

        Raises:
            ApiError: 429 ``rate_limit_exceeded`` (with the headers and a ``retry-after``)
                if the request does not fit now; nothing is taken then.
        """
        limits = self._limits()
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        window = limits.rate_window
        with self._lock:
            buckets = self._buckets.refilled(model, rpm, tpm, window)
            error: ApiError | None = None
            if tokens > tpm:
                error = _too_large(model, tpm, tokens)
            elif buckets.requests < 1.0:
                wait = (1.0 - buckets.requests) * window / rpm
                used = rpm - math.floor(buckets.requests)
                error = _exceeded(model, "requests", "RPM", rpm, used, 1, wait)
            elif buckets.tokens < tokens:
                wait = (tokens - buckets.tokens) * window / tpm
                used = tpm - math.floor(buckets.tokens)
                error = _exceeded(model, "tokens", "TPM", tpm, used, tokens, wait)
            else:
                buckets.requests -= 1.0
                buckets.tokens -= tokens
            headers = {
                "x-ratelimit-limit-requests": str(rpm),
                "x-ratelimit-limit-tokens": str(tpm),
                "x-ratelimit-remaining-requests": str(max(math.floor(buckets.requests), 0)),
                "x-ratelimit-remaining-tokens": str(max(math.floor(buckets.tokens), 0)),
                "x-ratelimit-reset-requests": duration((rpm - buckets.requests) * window / rpm),
                "x-ratelimit-reset-tokens": duration((tpm - buckets.tokens) * window / tpm),
            }
        if error is not None:
            error.headers = {**headers, **error.headers}
            raise error
        return headers


def _exceeded(
    model: str, kind: str, unit: str, limit: int, used: int, requested: int, wait: float
) -> ApiError:
    """The 429 of a request over the ``kind`` limit, to be retried after ``wait`` seconds."""
    return ApiError(
        429,
        f"Rate limit reached for {model} in organization {ORGANIZATION} on {kind} per min "
        f"({unit}): Limit {limit}, Used {used}, Requested {requested}. Please try again in "
        f"{duration(wait)}. {_MORE}",
        type=kind,
        code="rate_limit_exceeded",
        headers=retry_after(wait),
    )


def _too_large(model: str, limit: int, requested: int) -> ApiError:
    """The 429 of a request needing more tokens than the limit: retrying cannot help."""
    return ApiError(
        429,
        f"Request too large for {model} in organization {ORGANIZATION} on tokens per min "
        f"(TPM): Limit {limit}, Requested {requested}. The input or output tokens must be "
        f"reduced in order to run successfully. {_MORE}",
        type="tokens",
        code="rate_limit_exceeded",
        headers={"x-should-retry": "false"},
    )


def retry_after(wait: float) -> dict[str, str]:
    """The ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` headers."""
    wait = max(wait, 0.001)
    return {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
