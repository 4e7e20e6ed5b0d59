"""Pydantic models become strict JSON schemas, and replies are validated into them."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel

from batchor.errors import ConfigurationError
from batchor.structured import (
    OutputValidationError,
    import_model,
    strict_json_schema,
    validate_output,
)


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Person(BaseModel):
    name: str
    age: int = 0
    tags: list[str]
    home: Address
    kind: Literal["a", "b"]
    nickname: str | None = None


def _objects(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _objects(value)
    return found


def test_every_object_is_closed_and_requires_every_property() -> None:
    schema = strict_json_schema(Person)
    objects = _objects(schema)
    assert len(objects) == 2  # Person and the nested Address
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])


def test_optional_fields_are_nullable_and_defaults_dropped() -> None:
    schema = strict_json_schema(Person)
    nickname = schema["properties"]["nickname"]
    assert {"type": "null"} in nickname["anyOf"]
    assert "default" not in nickname
    assert "default" not in schema["properties"]["age"]


def test_a_reply_validates_into_the_model() -> None:
    text = (
        '{"name": "Ada", "age": 36, "tags": [], "home": {"city": "London", "zip_code": null},'
        ' "kind": "a", "nickname": null}'
    )
    person = validate_output(Person, text)
    assert isinstance(person, Person)
    assert person.home.city == "London"


@pytest.mark.parametrize(
    ("text", "error_class"),
    [
        ('{"name": "Ada", "tags": [', "invalid_json"),
        ("not json at all", "invalid_json"),
        ('{"name": "Ada"}', "schema_validation"),
        ('{"name": 1, "tags": [], "home": {"city": "x"}, "kind": "z"}', "schema_validation"),
    ],
)
def test_bad_replies_are_classified(text: str, error_class: str) -> None:
    with pytest.raises(OutputValidationError) as info:
        validate_output(Person, text)
    assert info.value.error_class == error_class


def test_import_model_by_path() -> None:
    assert import_model("batchor.demo:ReviewAnalysis").__name__ == "ReviewAnalysis"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz:Model", "cannot import 'no_such_module_xyz'"),
        ("batchor.demo:Missing", "no attribute 'Missing'"),
        ("batchor.demo:build_prompt", "is not a Pydantic model class"),
        ("batchor.demo", "must look like 'package.module:name'"),
    ],
)
def test_import_model_errors_name_the_path(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        import_model(path)
