"""Compilation of a JSON Schema straight to JSON text, for the emulator's hot path.

`TextCompiler` emits the same instance as `SchemaCompiler` (it draws the same choices from
the `Entropy`, in the same order), already serialised as compact JSON: object keys and enum
values are encoded once at compile time, so a reply costs no `json.dumps` of a dict. Parts
it has no fast form for (arrays, ``$ref``) are generated as values and encoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from batchor.testing.emulator.schemas import (
    SHALLOW,
    Entropy,
    SchemaCompiler,
    choice,
    first_non_null,
    integer_choices,
    number_choices,
    schema_type,
    string_generator,
)

_encode = json.JSONEncoder(separators=(",", ":")).encode
_quote = json.encoder.encode_basestring_ascii
_CACHE_SIZE = 512

TextGenerator = Callable[[Entropy], str]
"""A compiled schema: draws one instance from an `Entropy`, as compact JSON text."""


def _any_text(entropy: Entropy) -> str:
    return _quote(entropy.snippet())


class TextCompiler(SchemaCompiler):
    """Compile one (root) schema to a generator of JSON text."""

    def compile_text(self) -> TextGenerator:
        """The text generator for the root schema."""
        return self.text(self._root)

    def text(self, schema: Any) -> TextGenerator:
        """The text generator for one (sub)schema."""
        if not isinstance(schema, Mapping) or not schema:
            return _any_text
        if "$ref" in schema:
            return self._encoded(schema)
        if "const" in schema:
            constant = _encode(schema["const"])
            return lambda _: constant
        if schema.get("enum"):
            return choice([_encode(v) for v in schema["enum"]])
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self._union_text(schema[key])
        if schema.get("allOf"):
            return self.text(self._merge_all_of(schema))
        kind = schema_type(schema)
        if kind == "object":
            return self._object_text(schema)
        if kind == "string":
            string = string_generator(schema)
            return lambda e: _quote(string(e))
        if kind == "integer":
            return choice([_encode(v) for v in integer_choices(schema)])
        if kind == "number":
            return choice([_encode(v) for v in number_choices(schema)])
        if kind == "boolean":
            return choice(["false", "true"])
        if kind == "null":
            return lambda _: "null"
        if kind is None:
            return _any_text
        return self._encoded(schema)  # arrays (and unknown types) as values

    def _encoded(self, schema: Any) -> TextGenerator:
        generate = self.node(schema)
        return lambda e: _encode(generate(e))

    def _union_text(self, branches: list[Any]) -> TextGenerator:
        main = self.text(first_non_null(branches))
        if not any(isinstance(b, Mapping) and b.get("type") == "null" for b in branches):
            return main
        return lambda e: "null" if e.depth >= SHALLOW else main(e)

    def _object_text(self, schema: Mapping[str, Any]) -> TextGenerator:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return lambda _: "{}"
        fields = [
            ("{" if index == 0 else ",") + _encode(name) + ":"
            for index, name in enumerate(properties)
        ]
        generators = [self.text(sub) for sub in properties.values()]
        if len(generators) == 1:
            (key,), (only,) = fields, generators
            return lambda e: key + only(e) + "}"
        if len(generators) == 2:
            (key1, key2), (first, second) = fields, generators
            return lambda e: key1 + first(e) + key2 + second(e) + "}"
        pairs = list(zip(fields, generators, strict=True))

        def generate(entropy: Entropy) -> str:
            return "".join([key + value(entropy) for key, value in pairs]) + "}"

        return generate


class SchemaCache:
    """Compiled text generators keyed by schema, so repeated schemas are compiled once."""

    def __init__(self) -> None:
        """Start empty."""
        self._by_json: dict[str, TextGenerator] = {}
        self._last: tuple[Any, TextGenerator] | None = None

    def generator(self, schema: Any) -> TextGenerator:
        """The compiled text generator for ``schema``."""
        last = self._last
        if last is not None and last[0] == schema:
            return last[1]
        key = json.dumps(schema, sort_keys=True, default=str)
        generate = self._by_json.get(key)
        if generate is None:
            if len(self._by_json) >= _CACHE_SIZE:
                self._by_json.clear()
            generate = self._by_json[key] = TextCompiler(schema).compile_text()
        self._last = (schema, generate)
        return generate
