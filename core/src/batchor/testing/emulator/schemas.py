"""Deterministic generation of JSON values that validate against a JSON Schema.

A schema is compiled once into a tree of small generator closures (cached by the schema's
JSON), then each reply draws its choices from an `Entropy` seeded by a hash of the prompt.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

_MASK = (1 << 64) - 1
_MAX_DEPTH = 12
_SHALLOW = 3  # past this many nested $refs, arrays get minItems and nullable unions null
_CACHE_SIZE = 512
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
    """A deterministic stream of choices (splitmix64) plus the prompt words to quote."""

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
        digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()
        return cls(int.from_bytes(digest, "big"), text)

    def below(self, n: int) -> int:
        """A deterministic integer in ``range(n)`` (``n`` >= 1)."""
        self._state = z = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return (z ^ (z >> 31)) % n

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
            values = list(schema["enum"])
            return lambda e: values[e.below(len(values))]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self._union(schema[key])
        if schema.get("allOf"):
            return self.node(self._merge_all_of(schema))
        kind = _schema_type(schema)
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema)
        if kind == "string":
            return _string(schema)
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return lambda e: e.below(2) == 1
        if kind == "null":
            return lambda _: None
        return _any

    def _union(self, branches: list[Any]) -> Generator:
        """The first non-null branch; the null branch (if any) once recursion gets deep."""
        main = self.node(_first_non_null(branches))
        if not any(isinstance(b, Mapping) and b.get("type") == "null" for b in branches):
            return main
        return lambda e: None if e.depth >= _SHALLOW else main(e)

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
            count = max(1 + entropy.below(2), low) if entropy.depth < _SHALLOW else low
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


def _first_non_null(branches: list[Any]) -> Any:
    for branch in branches:
        if not (isinstance(branch, Mapping) and branch.get("type") == "null"):
            return branch
    return branches[0]


def _schema_type(schema: Mapping[str, Any]) -> str | None:
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


def _string(schema: Mapping[str, Any]) -> Generator:
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


def _integer(schema: Mapping[str, Any]) -> Generator:
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
    return lambda e: low + step * e.below(span + 1)


def _number(schema: Mapping[str, Any]) -> Generator:
    low_b, low_open, high_b, high_open = _bounds(schema)
    low = (
        float(low_b)
        if low_b is not None
        else (0.0 if high_b is None or high_b >= 0 else high_b - 10.0)
    )
    high = float(high_b) if high_b is not None else low + 10.0
    high = min(high, low + 10.0)

    def generate(entropy: Entropy) -> float:
        value = round(low + (high - low) * entropy.below(1001) / 1000, 2)
        too_low = value < low or (low_open and value <= low)
        too_high = value > high or (high_open and value >= high)
        if too_low or too_high:
            value = (low + high) / 2
        return value

    return generate


class SchemaCache:
    """Compiled generators keyed by schema, so repeated schemas are compiled once."""

    def __init__(self) -> None:
        """Start empty."""
        self._by_json: dict[str, Generator] = {}
        self._last: tuple[Any, Generator] | None = None

    def generator(self, schema: Any) -> Generator:
        """The compiled generator for ``schema``."""
        last = self._last
        if last is not None and last[0] == schema:
            return last[1]
        key = json.dumps(schema, sort_keys=True, default=str)
        generate = self._by_json.get(key)
        if generate is None:
            if len(self._by_json) >= _CACHE_SIZE:
                self._by_json.clear()
            generate = self._by_json[key] = SchemaCompiler(schema).compile()
        self._last = (schema, generate)
        return generate
