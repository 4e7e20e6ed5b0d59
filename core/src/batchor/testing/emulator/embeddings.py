"""Answers to ``/v1/embeddings`` request lines: deterministic unit vectors, or the 400 errors
the real API answers a body it refuses with.

A vector depends only on the input (text or token array), the model and the dimensions: a
SHA-256 of the model and the input seeds a SHAKE-256 stream whose first ``dimensions`` int16
values, scaled to unit length and rounded to float32 (as the API's are), are the vector. So a
shortened vector is the renormalised prefix of the full one, as with text-embedding-3's
``dimensions``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from batchor.testing.emulator.faults import LineFault

EMBEDDINGS = "/v1/embeddings"
"""The endpoint (in its OpenAI spelling) these answers are for."""
NATIVE_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""The size of each known model's vectors when ``dimensions`` is not given."""
DEFAULT_DIMENSIONS = 1536
"""The size for any other model name (an Azure deployment name, say)."""
FIXED_SIZE_MODELS = frozenset({"text-embedding-ada-002"})
"""Models that refuse ``dimensions`` (it is only supported by text-embedding-3 and later)."""
MAX_ARRAY_INPUTS = 2048
"""Most entries an array ``input`` may hold."""

_BODY_KEYS = ("input", "model", "dimensions", "encoding_format", "user")
_ENCODINGS = ("float", "base64")
_encode = json.JSONEncoder(separators=(",", ":")).encode
_BIG_ENDIAN = sys.byteorder == "big"
_FLOAT = "%.9g"

Inputs = Sequence[str | list[int]]
"""The inputs of one request, each embedded on its own."""


def _error(message: str, param: str | None = None, code: str | None = None) -> str:
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return _encode({"error": body})


INVALID_INPUT = _error(
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)
"""The API's error body for an ``input`` it cannot embed (an empty string, say)."""


def count_inputs(value: Any) -> int:
    """How many embedding inputs a request's ``input`` counts for (toward the batch limit).

    A string or a single token array is one input; an array of strings or of token arrays
    is one per entry. Anything else counts as one (the request fails on its own).
    """
    if isinstance(value, list) and value and not all(type(v) is int for v in value):
        return len(value)
    return 1


def split_inputs(value: Any) -> Inputs | None:
    """The inputs of a request's ``input``, or None if the API would refuse it."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value or len(value) > MAX_ARRAY_INPUTS:
        return None
    if all(isinstance(v, str) and v for v in value):
        return value
    if all(type(v) is int and v >= 0 for v in value):
        return [value]
    if all(_token_array(v) for v in value):
        return value
    return None


def _token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(v) is int and v >= 0 for v in value)


def _dimensions(body: Mapping[str, Any], model: str) -> int | str:
    """The requested vector size, or the error body the API answers about ``dimensions``."""
    native = NATIVE_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    value = body.get("dimensions")
    if value is None:
        return native
    if type(value) is not int:
        return _error(
            f"Invalid type for 'dimensions': expected an integer, but got "
            f"{type(value).__name__} instead.",
            "dimensions",
            "invalid_type",
        )
    if model in FIXED_SIZE_MODELS:
        return _error("This model does not support specifying dimensions.")
    if value < 1:
        return _error(
            f"Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but "
            f"got {value} instead.",
            "dimensions",
            "integer_below_min_value",
        )
    if value > native:
        return _error(
            f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
            f"but got {value} instead.",
            "dimensions",
            "integer_above_max_value",
        )
    return value


def body_error(body: Mapping[str, Any]) -> str | None:
    """The error body the API answers ``body`` with, but for its ``input``'s content."""
    for key in body:
        if key not in _BODY_KEYS:  # e.g. a structured-output ``text`` or ``response_format``
            return _error(f"Unrecognized request argument supplied: {key}")
    if body.get("input") is None:
        return _error("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in _ENCODINGS:
        return _error(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        return _error(
            f"Invalid type for 'user': expected a string, but got {type(user).__name__} instead.",
            "user",
            "invalid_type",
        )
    size = _dimensions(body, str(body.get("model", "")))
    return size if isinstance(size, str) else None


def embed(value: str | list[int], model: str, dimensions: int) -> array[float]:
    """The unit vector of one input (text or token array), as float32 values."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = b"tokens:" + ",".join(map(str, value)).encode()
    seed = hashlib.sha256(model.encode("utf-8", "surrogatepass") + b"\x00" + data).digest()
    raw = array("h", hashlib.shake_256(seed).digest(2 * dimensions))
    if _BIG_ENDIAN:
        raw.byteswap()
    norm = math.hypot(*raw)
    if norm == 0.0:  # all zeros: a chance of 2**-(16 * dimensions)
        raw[0], norm = 1, 1.0
    scale = 1.0 / norm
    return array("f", [x * scale for x in raw])


def _encoded(vector: array[float], as_base64: bool) -> str:
    """The JSON of a vector: an array of floats, or a base64 string of little-endian float32.

    Nine significant digits: each float reads back as the same float32.
    """
    if not as_base64:
        return "[" + ",".join(map(_FLOAT.__mod__, vector)) + "]"
    if _BIG_ENDIAN:
        vector = array("f", vector)
        vector.byteswap()
    return '"' + base64.b64encode(vector.tobytes()).decode("ascii") + '"'


def _garbled(encoded: str) -> str:
    """Half of an encoded vector, as a JSON string: no usable vector."""
    text = encoded.strip('"')
    cut = len(text) // 2
    if cut % 4 == 0:  # not a whole number of base64 quanta either
        cut -= 1
    return _encode(text[: max(cut, 1)])


class Embedder:
    """Answers the embeddings request lines that share a body, their string input aside.

    Everything but a string ``input`` is worked out once: the body's errors, the model, the
    dimensions and the encoding, and the inputs of an array ``input`` (the same on every line
    of a line shape without a prompt slot).
    """

    def __init__(self, body: Mapping[str, Any]) -> None:
        """Prepare to answer lines whose body is ``body`` (but for a string ``input``)."""
        model = body.get("model")
        self.model = model if isinstance(model, str) else ""
        self._model_json = _encode(self.model)
        value = body.get("input")
        self._per_line = isinstance(value, str)
        self._inputs: Inputs | None = None
        self.error = body_error(body)
        """The 400 error body every line is answered with, if the body is refused."""
        if self.error is None and not self._per_line:
            self._inputs = split_inputs(value)
            if self._inputs is None:
                self.error = INVALID_INPUT
        size = _dimensions(body, self.model)
        self.dimensions = size if isinstance(size, int) else 0
        self.base64 = body.get("encoding_format") == "base64"

    def reply(self, prompt: str, fault: LineFault | None) -> tuple[int, str, int]:
        """``(status, body JSON, prompt tokens)`` of a line whose string input is ``prompt``.

        Only ``invalid_json`` and ``schema_mismatch`` faults apply here (the error faults
        are answered before): the first answers each vector as half of its encoded text,
        the second leaves the ``embedding`` out of each ``data`` entry.
        """
        if self.error is not None:
            return 400, self.error, 0
        if self._per_line:
            if not prompt:
                return 400, INVALID_INPUT, 0
            inputs: Inputs = [prompt]
        else:
            assert self._inputs is not None
            inputs = self._inputs
        entries: list[str] = []
        tokens = 0
        for index, value in enumerate(inputs):
            tokens += (len(value) // 4 if isinstance(value, str) else len(value)) or 1
            head = f'{{"object":"embedding","index":{index}'
            if fault == "schema_mismatch":
                entries.append(head + "}")
                continue
            encoded = _encoded(embed(value, self.model, self.dimensions), self.base64)
            if fault == "invalid_json":
                encoded = _garbled(encoded)
            entries.append(f'{head},"embedding":{encoded}}}')
        body = (
            f'{{"object":"list","data":[{",".join(entries)}],"model":{self._model_json},'
            f'"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}'
        )
        return 200, body, tokens
