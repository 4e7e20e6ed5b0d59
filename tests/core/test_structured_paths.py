"""Every path of structured outputs (structured.py) and of models rebuilt from a recorded
schema (schema_models.py): the schema name sent, model paths, imports from the working
directory, the text of validation failures and each rewrite into the strict form."""

from __future__ import annotations

import copy
import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, PydanticUserError, ValidationError, create_model

from batchor.errors import ConfigurationError
from batchor.schema_models import model_from_schema, output_model
from batchor.structured import (
    OutputValidationError,
    _Strict,
    import_model,
    model_path,
    schema_name,
    strict_json_schema,
    validate_output,
)

# ---- the schema name and the model's path ------------------------------------------------------


class Outer(BaseModel):
    class Inner(BaseModel):
        """A model nested in another class."""

        text: str
        count: int

    inner: Inner


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("Sentiment", "Sentiment"),
        ("with-dash_and_underscore9", "with-dash_and_underscore9"),
        ("Page[int]", "Page_int_"),
        ("Résumé v2.1", "R_sum__v2_1"),
        ("A" * 64, "A" * 64),
        ("B" * 63 + "é", "B" * 63 + "_"),
        ("C" * 65, "C" * 64),
        ("D" * 100 + "!", "D" * 64),
        ("", "output"),
    ],
)
def test_the_schema_name_sent_is_cleaned_and_cut_to_64_characters(name: str, sent: str) -> None:
    model = create_model(name, a=(int, ...)) if name else type("", (BaseModel,), {})
    assert model.__name__ == name
    assert schema_name(model) == sent


def test_a_nested_model_is_named_by_its_class_and_found_by_its_qualified_path() -> None:
    assert schema_name(Outer.Inner) == "Inner"
    path = model_path(Outer.Inner)
    assert path == f"{__name__}:Outer.Inner"
    assert import_model(path) is Outer.Inner
    config = {
        "schema": strict_json_schema(Outer.Inner),
        "schema_name": schema_name(Outer.Inner),
        "schema_model": path,
    }
    assert output_model(config) is Outer.Inner


# ---- importing a model by path -------------------------------------------------------------------


@pytest.fixture
def module_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module beside the working directory (tests run in tmp_path), removed afterwards."""
    name = f"cwd_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel

            class Label(BaseModel):
                label: str

            NOT_A_MODEL = Label(label="x")
            """
        )
    )
    monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()  # path finders may hold an older listing of a cwd
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("entries", [[], ["."], [""]])
def test_a_model_beside_the_working_directory_imports(
    module_in_cwd: str, monkeypatch: pytest.MonkeyPatch, entries: list[str]
) -> None:
    rest = [p for p in sys.path if p not in ("", ".")]
    monkeypatch.setattr(sys, "path", [*entries, *rest])
    model = import_model(f"{module_in_cwd}:Label")
    assert model.__name__ == "Label"
    assert model.model_validate({"label": "a"}).label == "a"  # type: ignore[attr-defined]
    # The working directory is put first only when it is not on the path already.
    assert sys.path == ["", *rest] if not entries else sys.path == [*entries, *rest]


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [("NOT_A_MODEL", "is not a Pydantic model class"), ("json", "is not a Pydantic model class")],
)
def test_a_path_to_something_else_than_a_model_class_is_refused(
    module_in_cwd: str, attribute: str, fragment: str
) -> None:
    path = f"{module_in_cwd}:{attribute}" if attribute != "json" else "json:JSONDecoder"
    with pytest.raises(ConfigurationError) as info:
        import_model(path)
    assert str(info.value) == f"schema path {path!r} {fragment}"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "no_such_module_q:Model",
            "schema path 'no_such_module_q:Model': cannot import 'no_such_module_q': "
            "ModuleNotFoundError: No module named 'no_such_module_q'",
        ),
        ("json:NoSuchClass", "schema path 'json:NoSuchClass': no attribute 'NoSuchClass'"),
        ("json", "schema path 'json' must look like 'package.module:name'"),
    ],
)
def test_a_path_that_does_not_import_is_named_as_a_schema_path(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        import_model(path)
    assert str(info.value) == message


# ---- validating replies --------------------------------------------------------------------------


class Person(BaseModel):
    name: str
    age: int


def test_a_valid_reply_is_the_model() -> None:
    person = validate_output(Person, '{"name": "Ada", "age": 36}')
    assert isinstance(person, Person)
    assert (person.name, person.age) == ("Ada", 36)


@pytest.mark.parametrize(
    ("text", "error_class", "start", "detail"),
    [
        (
            '{"name": "Ada", ',
            "invalid_json",
            "reply is not valid JSON: 1 validation error for Person\n  Invalid JSON: EOF",
            "type=json_invalid",
        ),
        (
            "",
            "invalid_json",
            "reply is not valid JSON: 1 validation error for Person\n  Invalid JSON: EOF",
            "type=json_invalid",
        ),
        (
            '{"name": "Ada", "age": "old"}',
            "schema_validation",
            "reply does not match Person: 1 validation error for Person\nage\n",
            "type=int_parsing",
        ),
        (
            '{"age": 3, "name": 5}',
            "schema_validation",
            "reply does not match Person: 1 validation error for Person\nname\n",
            "type=string_type",
        ),
        (
            "[]",
            "schema_validation",
            "reply does not match Person: 1 validation error for Person\n",
            "type=model_type",
        ),
        (
            "{}",
            "schema_validation",
            "reply does not match Person: 2 validation errors for Person\nname\n",
            "type=missing",
        ),
    ],
)
def test_a_failed_validation_names_its_class_and_says_why(
    text: str, error_class: str, start: str, detail: str
) -> None:
    with pytest.raises(OutputValidationError) as info:
        validate_output(Person, text)
    assert info.value.error_class == error_class
    message = str(info.value)
    assert message.startswith(start)
    assert detail in message
    assert info.value.args == (message,)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_the_validation_error_carries_its_class_and_message() -> None:
    exc = OutputValidationError("schema_validation", "reply does not match X: y")
    assert (exc.error_class, str(exc)) == ("schema_validation", "reply does not match X: y")


# ---- models without a schema -------------------------------------------------------------------


def _refusing(message: str) -> type[BaseModel]:
    class Unschemable(BaseModel):
        value: int

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise PydanticUserError(message, code=None)

    return Unschemable


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ("\n  `Later` is not fully defined.\n\nMore help.", "`Later` is not fully defined."),
        ("one line", "one line"),
        ("", "PydanticUserError"),
        (" \n ", "PydanticUserError"),
    ],
)
def test_a_model_without_a_schema_says_why_in_one_line(message: str, said: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        strict_json_schema(_refusing(message))
    assert str(info.value) == f"structured output Unschemable has no JSON schema: {said}"
    assert info.value.__cause__ is None


# ---- the strict rewriting ----------------------------------------------------------------------


def strict(schema: dict[str, Any]) -> Any:
    """The rewriting alone, on a hand-written schema (not checked)."""
    before = copy.deepcopy(schema)
    out = _Strict(schema).node(schema)
    assert schema == before  # the input is left as it was
    return out


class Address(BaseModel):
    """Where someone lives."""

    city: str
    zip_code: str | None = None


class Node(BaseModel):
    value: int
    next: Node | None = Field(description="the following node")
    children: list[Node]


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Household(BaseModel):
    home: Address = Field(description="Main home")
    holiday: Address = Field(description="Holiday home")
    previous: list[Address]
    tree: Node = Field(description="A tree")
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    nickname: str | None = Field(default=None, examples=["Bo"])
    size: int = 2


def test_objects_are_closed_and_require_every_property_in_order() -> None:
    schema = strict_json_schema(Household)
    assert schema["additionalProperties"] is False
    assert schema["required"] == [
        "home", "holiday", "previous", "tree", "pet", "nickname", "size",
    ]  # fmt: skip
    address = schema["$defs"]["Address"]
    assert address["required"] == ["city", "zip_code"]
    assert address["additionalProperties"] is False


def test_dropped_keywords_go_at_every_level() -> None:
    text = json.dumps(strict_json_schema(Household))
    for keyword in ('"default"', '"examples"', '"discriminator"', '"oneOf"'):
        assert keyword not in text
    nickname = strict_json_schema(Household)["properties"]["nickname"]
    assert nickname == {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Nickname"}


def test_a_discriminated_union_is_sent_as_any_of() -> None:
    pet = strict_json_schema(Household)["properties"]["pet"]
    assert pet == {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}], "title": "Pet"}


def test_a_described_reference_is_inlined_each_time_with_its_own_description() -> None:
    props = strict_json_schema(Household)["properties"]
    for field, description in (("home", "Main home"), ("holiday", "Holiday home")):
        home = props[field]
        assert "$ref" not in home
        assert home["description"] == description  # the field's, over the class docstring
        assert home["title"] == "Address"
        assert list(home["properties"]) == ["city", "zip_code"]
        assert home["required"] == ["city", "zip_code"]
        assert home["additionalProperties"] is False
    # A reference without anything beside it stays a reference.
    assert props["previous"]["items"] == {"$ref": "#/$defs/Address"}


def test_recursion_stays_a_bare_reference() -> None:
    schema = strict_json_schema(Household)
    tree = schema["properties"]["tree"]
    assert tree["description"] == "A tree"
    assert tree["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert tree["properties"]["next"] == {
        "anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}],
        "description": "the following node",
    }
    node = schema["$defs"]["Node"]
    assert node["additionalProperties"] is False
    assert node["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}


def test_a_described_self_reference_is_inlined_once_then_bare() -> None:
    schema = {
        "$defs": {
            "Chain": {
                "type": "object",
                "properties": {"link": {"$ref": "#/$defs/Chain", "description": "next"}},
            }
        },
        "type": "object",
        "properties": {"chain": {"$ref": "#/$defs/Chain", "description": "top"}},
    }
    out = strict(schema)
    chain = out["properties"]["chain"]
    assert chain["description"] == "top"
    assert chain["properties"]["link"] == {"$ref": "#/$defs/Chain"}  # its description dropped
    assert chain["required"] == ["link"]
    inside = out["$defs"]["Chain"]["properties"]["link"]
    assert inside["description"] == "next"
    assert inside["properties"]["link"] == {"$ref": "#/$defs/Chain"}


@pytest.mark.parametrize(
    "ref", ["#/definitions/Thing", "#/$defs/Missing", "#/$defs/Scalar", "Thing"]
)
def test_a_described_reference_that_cannot_be_inlined_is_left_bare(ref: str) -> None:
    schema = {
        "$defs": {"Thing": {"type": "string"}, "Scalar": "not a schema"},
        "type": "object",
        "properties": {"x": {"$ref": ref, "description": "d", "title": "X"}},
    }
    assert strict(schema)["properties"]["x"] == {"$ref": ref}
    del schema["$defs"]  # a schema without definitions at all
    assert strict(schema) == {
        "type": "object",
        "properties": {"x": {"$ref": ref}},
        "additionalProperties": False,
        "required": ["x"],
    }


def test_an_inlined_definition_is_rewritten_too() -> None:
    schema = {
        "$defs": {
            "Thing": {
                "type": "object",
                "properties": {"a": {"type": "integer", "default": 1}},
                "oneOf": [{"type": "object"}],
            }
        },
        "properties": {"x": {"$ref": "#/$defs/Thing", "description": "d", "default": {}}},
    }
    x = strict(schema)["properties"]["x"]
    assert x == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "anyOf": [{"type": "object", "additionalProperties": False, "required": []}],
        "description": "d",
        "additionalProperties": False,
        "required": ["a"],
    }


def test_names_under_properties_and_definitions_are_kept_whatever_they_are() -> None:
    schema = {
        "type": "object",
        "properties": {
            "default": {"type": "string", "default": "x"},
            "examples": {"type": "string"},
        },
        "$defs": {"discriminator": {"type": "string", "examples": ["a"]}},
        "definitions": {"default": {"type": "integer", "default": 0}},
    }
    out = strict(schema)
    assert out["properties"] == {"default": {"type": "string"}, "examples": {"type": "string"}}
    assert out["$defs"] == {"discriminator": {"type": "string"}}
    assert out["definitions"] == {"default": {"type": "integer"}}
    assert out["required"] == ["default", "examples"]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        # A free-form dict is left as it is, for the check to refuse.
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            {"type": "object", "additionalProperties": {"type": "integer"}},
        ),
        (
            {"type": "object", "additionalProperties": True},
            {"type": "object", "additionalProperties": True},
        ),
        (
            {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        ),
        # An empty object closes with nothing required.
        ({"type": "object"}, {"type": "object", "additionalProperties": False, "required": []}),
        (
            {"type": "object", "additionalProperties": False},
            {"type": "object", "additionalProperties": False, "required": []},
        ),
        # Properties close an object whatever else it says.
        (
            {"properties": {"a": {"type": "string"}}, "additionalProperties": True},
            {
                "properties": {"a": {"type": "string"}},
                "additionalProperties": False,
                "required": ["a"],
            },
        ),
        # Not an object: left alone.
        ({"type": "string", "default": "x"}, {"type": "string"}),
        (
            {"type": "array", "items": {"type": "object"}},
            {
                "type": "array",
                "items": {"type": "object", "additionalProperties": False, "required": []},
            },
        ),
        # Both unions present: left as they are.
        (
            {"oneOf": [{"type": "string"}], "anyOf": [{"type": "integer"}]},
            {"oneOf": [{"type": "string"}], "anyOf": [{"type": "integer"}]},
        ),
        ({"oneOf": [{"type": "string"}]}, {"anyOf": [{"type": "string"}]}),
        ({"enum": ["a", 1, None]}, {"enum": ["a", 1, None]}),
        ({"$ref": "#/$defs/X"}, {"$ref": "#/$defs/X"}),
        ({"$ref": 3, "title": "odd"}, {"$ref": 3, "title": "odd"}),
    ],
)
def test_each_node_is_rewritten_as_documented(node: dict[str, Any], expected: Any) -> None:
    assert strict(node) == expected


def test_scalars_and_lists_pass_through() -> None:
    assert _Strict({}).node([1, "a", None, [{"default": 1}]]) == [1, "a", None, [{}]]
    assert _Strict({}).node("text") == "text"


# ---- models rebuilt from a recorded schema -----------------------------------------------------


class Odd(BaseModel):
    """Field names Python cannot take as they are."""

    klass: str = Field(alias="class")
    under: int = Field(alias="_id")
    copy_: bool = Field(alias="copy")
    spaced: float = Field(alias="first name")
    plain: Literal["x"] = Field(description="a constant")
    kinds: list[Literal["a", "b"]]
    maybe: int | str | None


def test_a_rebuilt_model_takes_every_field_name_and_type() -> None:
    schema = strict_json_schema(Odd)
    rebuilt = model_from_schema(schema, "Odd")
    assert rebuilt.__name__ == "Odd"
    assert rebuilt.__doc__ == "Field names Python cannot take as they are."
    data = {
        "class": "c", "_id": 3, "copy": True, "first name": 1.5, "plain": "x",
        "kinds": ["a", "b"], "maybe": None,
    }  # fmt: skip
    value = rebuilt.model_validate(data)
    assert value.model_dump(by_alias=True) == data
    assert rebuilt.model_fields["plain"].description == "a constant"
    for bad in ({"plain": "y"}, {"kinds": ["c"]}, {"maybe": 1.5}, {"_id": "three"}):
        with pytest.raises(ValidationError):
            rebuilt.model_validate({**data, **bad})
    assert rebuilt.model_validate({**data, "maybe": "s"}).maybe == "s"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("node", "accepted", "refused"),
    [
        ({"type": ["string", "null"]}, ["a", None], [1]),
        ({"const": 3}, [3], [4]),
        ({"enum": ["a", "b"]}, ["b"], ["c"]),
        ({"type": "null"}, [None], [0]),
        ({"type": "boolean"}, [True], ["maybe"]),
        ({"type": "array", "items": {"type": "integer"}}, [[1, 2]], [["x"]]),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, [1, None], ["x"]),
    ],
)
def test_each_recorded_type_is_rebuilt(
    node: dict[str, Any], accepted: list[Any], refused: list[Any]
) -> None:
    schema = {
        "type": "object",
        "properties": {"v": node},
        "required": ["v"],
        "additionalProperties": False,
    }
    model = model_from_schema(schema, "One")
    for value in accepted:
        assert model.model_validate({"v": value}).v == value  # type: ignore[attr-defined]
    for value in refused:
        with pytest.raises(ValidationError):
            model.model_validate({"v": value})


def test_one_definition_referenced_twice_is_one_class() -> None:
    class Pair(BaseModel):
        left: Address
        right: Address

    rebuilt = model_from_schema(strict_json_schema(Pair), "Pair")
    left = rebuilt.model_fields["left"].annotation
    assert left is rebuilt.model_fields["right"].annotation
    assert isinstance(left, type)
    assert left.__name__ == "Address"


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ({"$ref": "#/$defs/Nowhere"}, "unknown reference '#/$defs/Nowhere'"),
        ({"$ref": "#/definitions/A"}, "unknown reference '#/definitions/A'"),
        ({"allOf": [{"type": "string"}]}, "Broken_v has no type strict mode allows"),
        ({"type": "array"}, "Broken_v_item has no type strict mode allows"),
        (["not", "a", "schema"], "Broken_v is not a schema"),
    ],
)
def test_a_schema_that_cannot_be_rebuilt_is_one_configuration_error(
    node: Any, fragment: str
) -> None:
    schema = {"type": "object", "properties": {"v": node}, "$defs": {"A": {"type": "string"}}}
    with pytest.raises(ConfigurationError) as info:
        model_from_schema(schema, "Broken")
    assert str(info.value) == f"recorded schema: {fragment}"


def test_output_model_falls_back_from_the_class_to_the_schema_to_plain_json(
    module_in_cwd: str,
) -> None:
    schema = strict_json_schema(Address)
    assert output_model({}) is None
    assert output_model({"schema": {}}) is None
    # No class recorded, or one that does not import or is not a model: rebuilt.
    for path in (None, "", "no_such_module_abc:Address", f"{module_in_cwd}:NOT_A_MODEL"):
        rebuilt = output_model({"schema": schema, "schema_name": "Address", "schema_model": path})
        assert rebuilt is not None
        assert rebuilt is not Address
        assert rebuilt.__name__ == "Address"
        assert rebuilt.model_validate({"city": "x", "zip_code": None}).city == "x"  # type: ignore[attr-defined]
    unnamed = output_model({"schema": schema})
    assert unnamed is not None
    assert unnamed.__name__ == "Output"
    # A class that no longer gives the recorded schema is not trusted; one that cannot be
    # rebuilt either leaves the outputs plain JSON.
    changed = {"type": "object", "properties": {"a": {"allOf": []}}}
    assert output_model({"schema": changed, "schema_model": model_path(Address)}) is None
    assert output_model({"schema": schema, "schema_model": model_path(Address)}) is Address
