"""Anthropic's per-model rate limits on ``POST /v1/messages``: requests (RPM), input tokens
(ITPM) and output tokens (OTPM) per minute.

Each is a bucket holding at most its limit and refilling continuously (the whole limit over
`AnthropicEmulatorLimits.rate_window` seconds), as the API's token-bucket limits behave. A
request takes one request and its estimated input tokens when it arrives; its output tokens
are taken once it is answered (a request arriving while no output tokens are left is
refused). A request that does not fit is answered 429 ``rate_limit_error`` with a
``retry-after`` (whole seconds), and every answer carries the API's
``anthropic-ratelimit-*`` headers: ``-limit``, ``-remaining`` and ``-reset`` (an RFC 3339
time at which the bucket is full again) for ``requests``, ``input-tokens``,
``output-tokens`` and ``tokens`` (the more restrictive of the two token limits).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from batchor.testing.anthropic.batches import rfc3339
from batchor.testing.anthropic.errors import AnthropicApiError
from batchor.testing.anthropic.limits import AnthropicEmulatorLimits

_PREFIX = "anthropic-ratelimit-"


@dataclass
class _Bucket:
    """One limit of one model: what is left of it, as of ``at``."""

    left: float
    at: float


class _Model:
    """One model's three buckets."""

    def __init__(self, limits: tuple[int, int, int], now: float) -> None:
        self.buckets = [_Bucket(float(limit), now) for limit in limits]


class AnthropicRateLimiter:
    """Per-model request, input-token and output-token buckets under the live limits."""

    def __init__(
        self,
        limits: Callable[[], AnthropicEmulatorLimits],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Enforce the limits ``limits()`` returns, timed by ``clock``."""
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._config: tuple[int, int, int, float] | None = None

    def _refilled(self, model: str) -> tuple[_Model, tuple[int, int, int], float]:
        """The model's buckets, refilled up to now (the lock is held)."""
        limits = self._limits()
        caps = (
            limits.requests_per_minute,
            limits.input_tokens_per_minute,
            limits.output_tokens_per_minute,
        )
        window = limits.rate_window
        if self._config != (*caps, window):  # new limits: every bucket starts full
            self._config = (*caps, window)
            self._models.clear()
        now = self._clock()
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _Model(caps, now)
        for bucket, cap in zip(state.buckets, caps, strict=True):
            bucket.left = min(float(cap), bucket.left + max(now - bucket.at, 0.0) * cap / window)
            bucket.at = now
        return state, caps, window

    def acquire(self, model: str, input_tokens: int) -> dict[str, str]:
        """Take one request and ``input_tokens`` of ``model``'s limits; return the
        ``anthropic-ratelimit-*`` headers of the answer.

        Raises:
            AnthropicApiError: 429 ``rate_limit_error`` (with the headers and a
                ``retry-after``) if the request does not fit now; nothing is taken then.
        """
        with self._lock:
            state, caps, window = self._refilled(model)
            requests, tokens_in, tokens_out = state.buckets
            error: AnthropicApiError | None = None
            if input_tokens > caps[1]:
                error = AnthropicApiError(
                    429,
                    "rate_limit_error",
                    f"This request would exceed the rate limit for your organization of "
                    f"{caps[1]} input tokens per minute for {model}: the request alone holds "
                    f"{input_tokens}. Reduce the prompt's length.",
                    headers={"x-should-retry": "false"},
                )
            else:
                for bucket, cap, need, unit in (
                    (requests, caps[0], 1.0, "requests"),
                    (tokens_in, caps[1], float(input_tokens), "input tokens"),
                    (tokens_out, caps[2], 1.0, "output tokens"),
                ):
                    if bucket.left < need:
                        wait = (need - bucket.left) * window / cap
                        error = _exceeded(model, cap, unit, wait)
                        break
            if error is None:
                requests.left -= 1.0
                tokens_in.left -= input_tokens
            headers = _headers(state, caps, window)
        if error is not None:
            error.headers = {**headers, **error.headers}
            raise error
        return headers

    def settle(self, model: str, output_tokens: int) -> None:
        """Take the output tokens of an answered request from ``model``'s limit."""
        with self._lock:
            state, _, _ = self._refilled(model)
            state.buckets[2].left -= output_tokens


def _headers(state: _Model, caps: tuple[int, int, int], window: float) -> dict[str, str]:
    """The ``anthropic-ratelimit-*`` headers of the buckets as they are now."""
    headers: dict[str, str] = {}
    now = time.time()
    described: list[tuple[int, int, str]] = []
    for bucket, cap, name in zip(
        state.buckets, caps, ("requests", "input-tokens", "output-tokens"), strict=True
    ):
        remaining = max(math.floor(bucket.left), 0)
        reset = rfc3339(now + max(cap - bucket.left, 0.0) * window / cap) or ""
        headers[f"{_PREFIX}{name}-limit"] = str(cap)
        headers[f"{_PREFIX}{name}-remaining"] = str(remaining)
        headers[f"{_PREFIX}{name}-reset"] = reset
        if name != "requests":
            described.append((remaining, cap, reset))
    remaining, cap, reset = min(described)
    headers[f"{_PREFIX}tokens-limit"] = str(cap)
    headers[f"{_PREFIX}tokens-remaining"] = str(remaining)
    headers[f"{_PREFIX}tokens-reset"] = reset
    return headers


def _exceeded(model: str, limit: int, unit: str, wait: float) -> AnthropicApiError:
    """The 429 of a request over the ``unit`` limit, to be retried after ``wait`` seconds."""
    return AnthropicApiError(
        429,
        "rate_limit_error",
        f"This request would exceed the rate limit for your organization of {limit} {unit} "
        f"per minute for {model}. For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
        "current usage.",
        headers={"retry-after": str(max(math.ceil(wait), 1))},
    )
