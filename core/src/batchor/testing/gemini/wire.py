"""Small pieces of the Google API wire format: timestamps, resource ids and list paging."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

from batchor.testing.gemini.errors import invalid_argument

T = TypeVar("T")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_NANOS = 1_000_000_000


def both_spellings(*camel: str) -> frozenset[str]:
    """Field names in camelCase and in snake_case (proto JSON accepts either)."""
    snake = (re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower() for name in camel)
    return frozenset((*camel, *snake))


def now_ns() -> int:
    """The wall-clock time in nanoseconds since the epoch."""
    return time.time_ns()


def rfc3339(ns: int) -> str:
    """A ``google.protobuf.Timestamp`` as JSON: UTC, ``Z``-suffixed, nine fractional digits."""
    seconds, fraction = divmod(ns, _NANOS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def new_id(length: int) -> str:
    """A random resource id of lowercase letters and digits (as the service issues them)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def field(body: Mapping[str, object], camel: str, snake: str) -> object:
    """A field of a JSON request body given in either spelling (proto JSON accepts both)."""
    value = body.get(camel)
    return body.get(snake) if value is None else value


def page_size(query: Mapping[str, list[str]], default: int, maximum: int) -> int:
    """The ``pageSize`` query parameter: unset or 0 gives ``default``, above ``maximum`` is
    clamped (AIP-158), negative or not a number is a 400."""
    values = query.get("pageSize") or query.get("page_size")
    if not values:
        return default
    try:
        size = int(values[-1])
    except ValueError as exc:
        raise invalid_argument(
            f"Invalid value at 'page_size' (TYPE_INT32), \"{values[-1]}\""
        ) from exc
    if size < 0:
        raise invalid_argument("page_size must not be negative.")
    return min(size or default, maximum)


def _token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def page(
    items: Sequence[tuple[int, T]], query: Mapping[str, list[str]], default: int, maximum: int
) -> tuple[list[T], str | None]:
    """One page of ``items`` (``(sequence number, item)``, newest first) and the token of the
    next page, if any. A page token names the sequence number the previous page ended at."""
    size = page_size(query, default, maximum)
    values = query.get("pageToken") or query.get("page_token")
    start = 0
    if values and values[-1]:
        raw = values[-1]
        try:
            decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            after = int(decoded.removeprefix("after:")) if decoded.startswith("after:") else None
        except (binascii.Error, UnicodeDecodeError, ValueError):
            after = None
        if after is None:
            raise invalid_argument("Invalid page token.")
        start = next((i for i, (seq, _) in enumerate(items) if seq < after), len(items))
    chunk = items[start : start + size]
    more = start + size < len(items)
    return [item for _, item in chunk], (_token(chunk[-1][0]) if more and chunk else None)
