"""Synchronous sending of a batch request (`FinishSync`): the request a batch input line
carries sent to OpenAI's ordinary endpoint, its answer written as the output line a batch
would hold for it, and the wait OpenAI's ``x-ratelimit-*`` headers ask for."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_LIMITS = ("requests", "tokens")


def parse_request(line: bytes) -> tuple[str, str, dict[str, Any]]:
    """A batch input line's ``(custom_id, url, body)``.

    Raises:
        ValueError: it is not a batch input line.
    """
    try:
        parsed = orjson.loads(line)
        return str(parsed["custom_id"]), str(parsed["url"]), dict(parsed["body"])
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a batch input line: {exc}") from None


def sync_path(url: str) -> str:
    """The path the SDK posts a batch line's ``url`` to (relative to its base URL, which
    holds ``/v1`` already; Azure's spellings have none)."""
    return url.removeprefix("/v1") if url.startswith("/v1/") else url


def result_line(custom_id: str, status: int, body: Any) -> bytes:
    """The output line a batch would hold for a request answered ``status`` with ``body``."""
    return orjson.dumps({"custom_id": custom_id, "response": {"status_code": status, "body": body}})


def reset_seconds(text: str | None) -> float:
    """An ``x-ratelimit-reset-*`` value (``"20ms"``, ``"1.5s"``, ``"6m0s"``) in seconds
    (``0.0`` when absent or unreadable)."""
    if not text:
        return 0.0
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text.strip()))


def rate_limit_wait(headers: Mapping[str, str]) -> float:
    """Seconds to hold off before the next request: the reset time of a limit (requests
    or tokens) with nothing remaining, else ``0.0``."""
    wait = 0.0
    for limit in _LIMITS:
        remaining = headers.get(f"x-ratelimit-remaining-{limit}")
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            wait = max(wait, reset_seconds(headers.get(f"x-ratelimit-reset-{limit}")))
    return wait
