"""JSON for the Anthropic emulator's hot paths: documents are read with ``orjson`` when it is
importable (it is a dependency of batchor), with the standard library otherwise, to the
standard library's result either way; text is written with the standard library's encoder.

``orjson`` reads a few documents differently from `json.loads`: it refuses ``NaN`` and
``Infinity``, lone surrogates and numbers out of a double's range, and reads an integer
wider than 64 bits as a float. A document it refuses, or one holding a run of 20 digits (a
possibly wide integer), is read by the standard library, so every document reads as
`json.loads` reads it.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:  # pragma: no branch - orjson is a dependency of batchor
    import orjson
except ImportError:  # pragma: no cover - only without batchor's dependencies
    orjson = None  # type: ignore[assignment]

encode = json.JSONEncoder(separators=(",", ":")).encode
"""Compact JSON text, non-ASCII characters escaped (the standard library's encoder)."""
quote = json.encoder.encode_basestring_ascii
"""A string as a JSON string literal, as `encode` writes it."""
_WIDE = re.compile(r"[0-9]{20}")
_WIDE_BYTES = re.compile(rb"[0-9]{20}")


def loads(text: str | bytes) -> Any:
    """``text`` parsed as `json.loads` parses it (raising `ValueError` as it does)."""
    if orjson is not None:
        if isinstance(text, bytes):
            wide = _WIDE_BYTES.search(text) is not None
        else:
            wide = _WIDE.search(text) is not None
        if not wide:
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass  # maybe JSON only the standard library reads: let it say
    return json.loads(text)
