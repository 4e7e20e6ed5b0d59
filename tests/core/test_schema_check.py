"""Structured outputs that OpenAI's strict mode would refuse, or answer empty, fail the job
up front with one line naming the field and the fix; nothing is created or sent."""

from __future__ import annotations

import enum
import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field, HttpUrl, RootModel, create_model

from batchor import BatchRunner
from batchor.cli.main import cli
from batchor.errors import ConfigurationError
from batchor.estimate import estimate_job
from batchor.schema_check import (
    MAX_ENUM_VALUES,
    MAX_NESTING,
    MAX_PROPERTIES,
    check_strict_schema,
    schema_problems,
)
from batchor.structured import strict_json_schema
from batchor.testing.emulator.replies import ReplyFactory
from batchor.testing.emulator.schemas import strict_refusal
from tests.core.conftest import MakeJob, Sentiment, make_items

# ---- models strict mode refuses ----------------------------------------------------------


class Inner(BaseModel):
    name: str
    counts: dict[str, int]


class Outer(BaseModel):
    items: list[Inner]


class WithAny(BaseModel):
    label: str
    value: Any


class Rows(RootModel[list[Inner]]):
    pass


class A(BaseModel):
    a: int


class B(BaseModel):
    b: str


class Either(RootModel[A | B]):
    pass


class WithTuple(BaseModel):
    pair: tuple[int, str]


class WithSet(BaseModel):
    tags: set[str]


class WithUrl(BaseModel):
    link: HttpUrl


class WithBareDict(BaseModel):
    extra: dict  # type: ignore[type-arg]


class WithBareList(BaseModel):
    values: list  # type: ignore[type-arg]


class WithOptionalDict(BaseModel):
    scores: dict[str, float] | None


class WithObject(BaseModel):
    thing: object


def _deep(levels: int) -> type[BaseModel]:
    """A chain of ``levels`` nested models."""
    model: type[BaseModel] = create_model("L0", leaf=(str, ...))
    for n in range(1, levels):
        model = create_model(f"L{n}", child=(model, ...))
    return model


TooDeep = _deep(MAX_NESTING + 1)

REFUSED: list[tuple[type[BaseModel], str, str]] = [
    (Outer, "Outer.items[].counts is a free-form dict", "list of key/value objects"),
    (WithAny, "WithAny.value has no type", "give it a concrete type"),
    (Rows, "Rows is a list at the root", "field 'items: list[...]'"),
    (Either, "Either is a union at the root", "one field holding the union"),
    (WithTuple, "WithTuple.pair is a fixed-length tuple", "list[...] of one type"),
    (WithSet, "WithSet.tags is a set", "use list[...]"),
    (WithUrl, "WithUrl.link has string format 'uri'", "str instead of HttpUrl"),
    (WithBareDict, "WithBareDict.extra is a free-form dict", "model with named fields"),
    (WithBareList, "WithBareList.values[] has no type", "give it a concrete type"),
    (WithOptionalDict, "WithOptionalDict.scores is a free-form dict", "key/value objects"),
    (WithObject, "WithObject.thing has no type", "give it a concrete type"),
    (TooDeep, f"is nested {MAX_NESTING + 1} objects deep", "flatten the model"),
]
IDS = [model.__name__ for model, _, _ in REFUSED]


def _one_line_error(info: pytest.ExceptionInfo[ConfigurationError], where: str, fix: str) -> str:
    message = str(info.value)
    assert "\n" not in message
    assert "is not accepted by OpenAI's strict mode" in message
    assert where in message
    assert fix in message
    return message


@pytest.mark.parametrize(("model", "where", "fix"), REFUSED, ids=IDS)
def test_the_job_refuses_the_model_naming_the_field_and_the_fix(
    model: type[BaseModel], where: str, fix: str, make_job: MakeJob
) -> None:
    with pytest.raises(ConfigurationError) as info:
        strict_json_schema(model)
    message = _one_line_error(info, where, fix)
    with pytest.raises(ConfigurationError) as built:
        make_job(make_items(2), structured=model)
    assert str(built.value) == message


@pytest.mark.parametrize(("model", "where", "fix"), REFUSED[:4], ids=IDS[:4])
def test_start_and_estimate_refuse_it_before_anything_is_created(
    model: type[BaseModel], where: str, fix: str, make_job: MakeJob, tmp_path: Path
) -> None:
    job = make_job(make_items(3))
    # A job whose model was swapped after construction still never reaches the store.
    object.__setattr__(job, "structured_output", model)
    with pytest.raises(ConfigurationError) as estimated:
        estimate_job(job)
    message = _one_line_error(estimated, where, fix)
    store = tmp_path / "store.db"
    with BatchRunner(store=f"sqlite:///{store}", artifacts=tmp_path / "artifacts") as runner:
        with pytest.raises(ConfigurationError) as started:
            runner.start(job, run_id="refused")
        assert str(started.value) == message
        assert runner.store.get_run("refused") is None
        assert runner.store.list_runs() == []
    assert not (tmp_path / "artifacts" / "runs").exists()


def test_every_problem_is_counted_in_the_one_line() -> None:
    class Many(BaseModel):
        counts: dict[str, int]
        anything: Any
        pair: tuple[int, int]

    with pytest.raises(ConfigurationError, match=r"\(and 2 more: Many.anything, Many.pair\)"):
        strict_json_schema(Many)


# ---- models strict mode accepts -----------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Tree(BaseModel):
    label: str
    children: list[Tree]
    parent: Tree | None = None


class Fine(BaseModel):
    name: str = Field(description="Who", min_length=1, pattern=r"^\w+$")
    age: int = Field(ge=0, le=150)
    ratio: float = Field(gt=0, lt=1, multiple_of=0.01)
    tags: list[str] = Field(min_length=1, max_length=5)
    colour: Colour
    level: Level
    kind: Literal["a", "b"]
    home: Address = Field(description="Where they live")
    others: list[Address]
    nickname: str | None = None
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    either: Cat | Dog
    born: date
    seen: datetime
    uid: UUID
    tree: Tree
    scores: list[float] | None = None


def test_supported_models_pass_and_come_out_strict() -> None:
    schema = strict_json_schema(Fine)
    assert schema["type"] == "object"
    assert schema_problems(schema, "Fine") == []
    text = json.dumps(schema)
    assert "oneOf" not in text
    assert "discriminator" not in text
    assert schema["properties"]["pet"]["anyOf"]
    # A described sub-model is inlined: strict mode allows nothing beside a $ref.
    home = schema["properties"]["home"]
    assert "$ref" not in home
    assert home["description"] == "Where they live"
    assert home["additionalProperties"] is False
    assert home["required"] == ["city", "zip_code"]
    # Recursion stays a reference, and a recursive model at the root is an object.
    assert strict_json_schema(Tree)["type"] == "object"
    assert schema_problems(strict_json_schema(Tree), "Tree") == []


def test_nesting_up_to_the_limit_passes() -> None:
    strict_json_schema(_deep(MAX_NESTING))


def test_the_documented_size_limits() -> None:
    def obj(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    wide = obj({f"p{i}": {"type": "string"} for i in range(MAX_PROPERTIES + 1)})
    assert "object properties in all" in str(schema_problems(wide, "Wide")[0])
    assert schema_problems(obj({f"p{i}": {"type": "string"} for i in range(50)}), "Ok") == []

    enums = obj({"e": {"type": "string", "enum": [f"v{i}" for i in range(MAX_ENUM_VALUES + 1)]}})
    assert "enum values in all" in str(schema_problems(enums, "Enums")[0])

    long_enum = obj({"e": {"type": "string", "enum": [f"{i:060d}" for i in range(300)]}})
    (problem,) = schema_problems(long_enum, "Long")
    assert problem.path == "Long.e"
    assert "15,000 characters" in problem.problem

    names = obj({f"{i:0200d}": {"type": "string"} for i in range(601)})
    assert "120,000" in str(schema_problems(names, "Names")[0])


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, "additionalProperties"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": False,
            },
            "does not list a as required",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"allOf": [{"type": "string"}]}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "uses 'allOf'",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/A", "description": "x"}},
                "required": ["a"],
                "additionalProperties": False,
                "$defs": {"A": {"type": "string"}},
            },
            r"keywords beside \$ref",
        ),
    ],
)
def test_hand_written_schemas_are_checked_too(schema: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        check_strict_schema(schema, "Hand")


# ---- the CLI and the emulator -------------------------------------------------------------


def test_cli_estimate_reports_the_same_error(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("id,text\nr1,hello\n")
    args = ["--id-field", "id", "--prompt-field", "text", "--model", "gpt-4.1-mini"]
    result = CliRunner().invoke(
        cli, ["estimate", str(data), *args, "--schema", "tests.core.test_schema_check:Outer"]
    )
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Outer.items[].counts is a free-form dict" in result.stderr
    assert "list of key/value objects" in result.stderr


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/responses"])
def test_the_emulator_answers_a_refused_schema_with_a_400_per_line(endpoint: str) -> None:
    bad = {
        "type": "object",
        "properties": {"counts": {"type": "object", "additionalProperties": {"type": "integer"}}},
        "required": ["counts"],
        "additionalProperties": False,
    }

    def body(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
        spec = {"name": "Counts", "schema": schema, "strict": strict}
        if endpoint == "/v1/responses":
            return {
                "model": "m",
                "input": "hi",
                "text": {"format": {"type": "json_schema", **spec}},
            }
        return {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": spec},
        }

    line, is_error, _, _ = (
        ReplyFactory().renderer(endpoint, body(bad, True)).answer('"c1"', "hi", None, 0)
    )
    answered = json.loads(line)
    assert is_error
    assert answered["custom_id"] == "c1"
    assert answered["response"]["status_code"] == 400
    error = answered["response"]["body"]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Invalid schema for response_format 'Counts': ")
    assert "Counts.counts is a free-form dict" in error["message"]
    # Without strict the schema is only a hint; and a schema batchor builds is accepted.
    assert strict_refusal(endpoint, body(bad, False)) is None
    assert strict_refusal(endpoint, body(strict_json_schema(Sentiment), True)) is None


def test_fields_named_like_keywords_are_kept() -> None:
    class Named(BaseModel):
        default: str
        examples: list[str]
        discriminator: int

    schema = strict_json_schema(Named)
    assert list(schema["properties"]) == ["default", "examples", "discriminator"]
    assert schema["required"] == ["default", "examples", "discriminator"]


def test_a_model_without_a_schema_is_one_configuration_error() -> None:
    class Later(BaseModel):
        child: Undefined  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match="structured output Later has no JSON schema"):
        strict_json_schema(Later)
