"""Gemini's response schemas, turned into the JSON Schema the reply generator draws from.

A request asks for structured output with ``generationConfig.responseSchema`` (Gemini's
OpenAPI 3.0 subset: upper-case ``type`` names such as ``"OBJECT"``, ``nullable``,
``propertyOrdering``, int64 bounds written as strings) or ``responseJsonSchema`` (JSON Schema
as is). `to_json_schema` converts the former; the latter is used unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SNAKE = {
    "any_of": "anyOf",
    "property_ordering": "propertyOrdering",
    "min_items": "minItems",
    "max_items": "maxItems",
    "min_length": "minLength",
    "max_length": "maxLength",
    "min_properties": "minProperties",
    "max_properties": "maxProperties",
}
_INT64_BOUNDS = frozenset(
    {"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"}
)
_DROPPED = frozenset({"propertyOrdering", "example", "nullable"})


def to_json_schema(schema: Any) -> Any:
    """The JSON Schema equivalent of a Gemini ``Schema`` object (recursively)."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = _SNAKE.get(str(raw_key), str(raw_key))
        if key in _DROPPED:
            continue
        if key == "type":
            kind = str(value).lower()
            if kind != "type_unspecified":
                out["type"] = kind
        elif key == "properties" and isinstance(value, Mapping):
            out["properties"] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out["items"] = to_json_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out["anyOf"] = [to_json_schema(branch) for branch in value]
        elif key in _INT64_BOUNDS and isinstance(value, str) and value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    ordering = schema.get("propertyOrdering") or schema.get("property_ordering")
    if isinstance(ordering, list) and isinstance(out.get("properties"), dict):
        properties = out["properties"]
        ordered = {name: properties[name] for name in ordering if name in properties}
        out["properties"] = ordered | properties
    if schema.get("nullable") is True:
        stated = out.get("type")
        if isinstance(stated, str):
            out["type"] = [stated, "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def enum_values(schema: Any) -> list[str] | None:
    """The values a ``text/x.enum`` reply may take, if ``schema`` lists them."""
    if isinstance(schema, Mapping):
        values = schema.get("enum")
        if isinstance(values, list) and values:
            return [str(v) for v in values]
    return None
