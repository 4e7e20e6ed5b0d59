"""Deterministic generation of JSON values that validate against a JSON Schema.

A schema is compiled once into a tree of small generator closures, then each reply draws
its choices from an `Entropy` seeded by a hash of the prompt. (`schema_text` compiles the
same tree to a generator of JSON text, and caches compiled schemas.)
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from batchor.schema_check import schema_problems

_MASK = (1 << 64) - 1
_MAX_DEPTH = 12
SHALLOW = 3
"""Past this many nested ``$ref``s, arrays get ``minItems`` and nullable unions null."""
_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "P1D",
}


class Entropy:
    """A deterministic stream of choices (a 64-bit LCG, xorshifted) plus the prompt's words."""

    __slots__ = ("_state", "_text", "_words", "depth")

    def __init__(self, seed: int, text: str = "") -> None:
        """Start the stream at ``seed``; words of ``text`` feed the generated strings."""
        self._state = seed & _MASK
        self._text = text
        self._words: list[str] | None = None
        self.depth = 0

    @classmethod
    def for_text(cls, text: str) -> Entropy:
        """An entropy stream determined by ``text`` (typically the prompt)."""
        return cls(zlib.crc32(text.encode("utf-8", "replace")), text)

    def below(self, n: int) -> int:
        """A deterministic integer in ``range(n)`` (``n`` >= 1)."""
        self._state = z = (self._state * 0x5851F42D4C957F2D + 0x14057B7EF767814F) & _MASK
        return ((z ^ (z >> 33)) >> 11) % n

    def snippet(self) -> str:
        """One to three consecutive words of the prompt (``"text"`` for an empty prompt)."""
        words = self._words
        if words is None:
            words = self._words = self._text[:400].split()[:64]
        if not words:
            return "text"
        count = 1 + self.below(3)
        start = self.below(max(1, len(words) - count + 1))
        return " ".join(words[start : start + count])[:48]


Generator = Callable[[Entropy], Any]
"""A compiled schema: draws one instance from an `Entropy`."""


def _any(entropy: Entropy) -> Any:
    return entropy.snippet()


class SchemaCompiler:
    """Compile one (root) schema, resolving local ``$ref`` pointers into ``$defs``."""

    def __init__(self, root: Any) -> None:
        """Prepare to compile ``root``."""
        self._root = root
        self._refs: dict[str, Generator] = {}

    def compile(self) -> Generator:
        """The generator for the root schema."""
        return self.node(self._root)

    def node(self, schema: Any) -> Generator:
        """The generator for one (sub)schema."""
        if not isinstance(schema, Mapping) or not schema:
            return _any
        if "$ref" in schema:
            return self._ref(str(schema["$ref"]))
        if "const" in schema:
            constant = schema["const"]
            return lambda _: constant
        if schema.get("enum"):
            return choice(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self._union(schema[key])
        if schema.get("allOf"):
            return self.node(self._merge_all_of(schema))
        kind = schema_type(schema)
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema)
        if kind == "string":
            return string_generator(schema)
        if kind == "integer":
            return choice(integer_choices(schema))
        if kind == "number":
            return choice(number_choices(schema))
        if kind == "boolean":
            return choice([False, True])
        if kind == "null":
            return lambda _: None
        return _any

    def _union(self, branches: list[Any]) -> Generator:
        """The first non-null branch; the null branch (if any) once recursion gets deep."""
        main = self.node(first_non_null(branches))
        if not any(isinstance(b, Mapping) and b.get("type") == "null" for b in branches):
            return main
        return lambda e: None if e.depth >= SHALLOW else main(e)

    def _ref(self, ref: str) -> Generator:
        refs = self._refs

        def generate(entropy: Entropy) -> Any:
            compiled = refs.get(ref)
            if compiled is None:
                compiled = refs[ref] = self.node(self._lookup(ref))
            if entropy.depth >= _MAX_DEPTH:
                return None
            entropy.depth += 1
            try:
                return compiled(entropy)
            finally:
                entropy.depth -= 1

        return generate

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        target: Any = self._root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                return {}
        return target

    def _resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema and seen < _MAX_DEPTH:
            schema = self._lookup(str(schema["$ref"]))
            seen += 1
        return schema

    def _merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self._resolve(part)
            if not isinstance(part, Mapping):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def _object(self, schema: Mapping[str, Any]) -> Generator:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return lambda _: {}
        fields = [(name, self.node(sub)) for name, sub in properties.items()]
        return lambda e: {name: generate(e) for name, generate in fields}

    def _array(self, schema: Mapping[str, Any]) -> Generator:
        prefix = [self.node(s) for s in schema.get("prefixItems") or []]
        items = schema.get("items")
        closed = items is False
        item = _any if closed else self.node(items)
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        if closed:
            high = len(prefix) if high is None else min(int(high), len(prefix))
        unique = bool(schema.get("uniqueItems"))

        def generate(entropy: Entropy) -> list[Any]:
            count = max(1 + entropy.below(2), low) if entropy.depth < SHALLOW else low
            count = max(count, len(prefix))
            if high is not None:
                count = min(count, int(high))
            values = [
                prefix[i](entropy) if i < len(prefix) else item(entropy) for i in range(count)
            ]
            if unique:
                distinct = {json.dumps(v, sort_keys=True): v for v in values}
                if len(distinct) >= low:
                    values = list(distinct.values())
            return values

        return generate


def first_non_null(branches: list[Any]) -> Any:
    """The first branch of a union that is not ``{"type": "null"}`` (else the first)."""
    for branch in branches:
        if not (isinstance(branch, Mapping) and branch.get("type") == "null"):
            return branch
    return branches[0]


def schema_type(schema: Mapping[str, Any]) -> str | None:
    """The (first non-null) type a schema asks for, stated or implied, if any."""
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def string_generator(schema: Mapping[str, Any]) -> Generator:
    """A generator of strings for a string schema (formats and lengths honoured)."""
    fixed = _FORMATS.get(str(schema.get("format", "")))
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    is_uuid = schema.get("format") == "uuid"

    def generate(entropy: Entropy) -> str:
        if is_uuid:
            value = f"{entropy.below(1 << 32):08x}-0000-4000-8000-{entropy.below(1 << 48):012x}"
        else:
            value = fixed if fixed is not None else entropy.snippet()
        if len(value) < low:
            value = value + "x" * (low - len(value))
        if high is not None:
            value = value[: int(high)]
        return value

    return generate


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    low, low_open = schema.get("minimum"), False
    high, high_open = schema.get("maximum"), False
    excl_low, excl_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(excl_low) and (low is None or excl_low >= low):
        low, low_open = excl_low, True
    if _is_number(excl_high) and (high is None or excl_high <= high):
        high, high_open = excl_high, True
    return low, low_open, high, high_open


def choice(values: list[Any]) -> Generator:
    """A generator picking one of ``values``."""
    return lambda e: values[e.below(len(values))]


def integer_choices(schema: Mapping[str, Any]) -> list[int]:
    """The (at most ten) values an integer schema is answered with."""
    low_b, low_open, high_b, high_open = _bounds(schema)
    step = schema.get("multipleOf")
    step = int(step) if isinstance(step, int | float) and step >= 1 and step == int(step) else 1
    low = math.floor(low_b) + 1 if low_open and low_b is not None else low_b
    high = math.ceil(high_b) - 1 if high_open and high_b is not None else high_b
    if low is None:
        low = 0 if high is None or high >= 0 else int(high) - 9
    low = math.ceil(low)
    low = -(-low // step) * step
    span = 9 if high is None else max(0, (math.floor(high) - low) // step)
    span = min(span, 9)
    return [low + step * k for k in range(span + 1)]


def number_choices(schema: Mapping[str, Any]) -> list[float]:
    """The 1,001 values (a grid over at most ten units) a number schema is answered with."""
    low_b, low_open, high_b, high_open = _bounds(schema)
    low = (
        float(low_b)
        if low_b is not None
        else (0.0 if high_b is None or high_b >= 0 else high_b - 10.0)
    )
    high = float(high_b) if high_b is not None else low + 10.0
    high = min(high, low + 10.0)
    values: list[float] = []
    for k in range(1001):
        value = round(low + (high - low) * k / 1000, 2)
        too_low = value < low or (low_open and value <= low)
        too_high = value > high or (high_open and value >= high)
        values.append((low + high) / 2 if too_low or too_high else value)
    return values


def strict_refusal(endpoint: str, body: Mapping[str, Any]) -> str | None:
    """The 400 error body the API answers a request with when its ``strict: true`` schema is
    one strict mode refuses (`batchor.schema_check`), else None.

    The real API checks the schema per request, so each such line fails on its own with an
    ``invalid_request_error``; the batch itself is not refused.
    """
    fmt: Any = None
    param = "response_format"
    if endpoint == "/v1/chat/completions":
        outer = body.get("response_format")
        if isinstance(outer, Mapping) and outer.get("type") == "json_schema":
            fmt = outer.get("json_schema")
    elif endpoint == "/v1/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
        param = "text.format.schema"
        if not (isinstance(fmt, Mapping) and fmt.get("type") == "json_schema"):
            fmt = None
    if not isinstance(fmt, Mapping) or fmt.get("strict") is not True:
        return None
    name = str(fmt.get("name", ""))
    problems = schema_problems(fmt.get("schema"), name or "schema")
    if not problems:
        return None
    error = {
        "message": f"Invalid schema for response_format '{name}': {problems[0]}.",
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_json_schema",
    }
    return json.dumps({"error": error}, separators=(",", ":"))
