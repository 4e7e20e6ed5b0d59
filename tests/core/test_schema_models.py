"""Typed outputs survive a class that cannot be imported by name: the model is rebuilt from
the JSON schema recorded with the run, and validates what the original validates."""

from __future__ import annotations

import enum
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from batchor import BatchRunner
from batchor.schema_models import model_from_schema, output_model
from batchor.structured import model_path, schema_name, strict_json_schema
from batchor.testing import OpenAIBatchEmulator


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Tag(BaseModel):
    name: str
    weight: float


class Node(BaseModel):
    value: int
    children: list[Node]


class Ticket(BaseModel):
    label: Literal["bug", "feature"]
    priority: int
    colour: Colour
    urgent: bool
    note: str | None
    tags: list[Tag]
    main_tag: Tag | None = Field(description="the most relevant tag")
    tree: Node
    schema_: str = Field(alias="schema")


GOOD = {
    "label": "bug",
    "priority": 2,
    "colour": "red",
    "urgent": True,
    "note": None,
    "tags": [{"name": "ui", "weight": 0.5}],
    "main_tag": {"name": "ui", "weight": 0.5},
    "tree": {"value": 1, "children": [{"value": 2, "children": []}]},
    "schema": "v1",
}


def _rebuilt() -> type[BaseModel]:
    return model_from_schema(strict_json_schema(Ticket), schema_name(Ticket))


def test_a_rebuilt_model_validates_what_the_original_validates() -> None:
    original = Ticket.model_validate(GOOD)
    rebuilt = _rebuilt().model_validate(GOOD)
    assert rebuilt.model_dump(by_alias=True) == original.model_dump(by_alias=True, mode="json")
    assert rebuilt.label == "bug"  # type: ignore[attr-defined]
    assert rebuilt.tags[0].weight == 0.5  # type: ignore[attr-defined]
    assert rebuilt.tree.children[0].value == 2  # type: ignore[attr-defined]
    assert rebuilt.main_tag.name == "ui"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        {"label": "question"},  # not in the Literal
        {"colour": "green"},  # not in the enum
        {"priority": "high"},  # not an int
        {"tags": [{"name": "ui"}]},  # a nested field missing
        {"tree": {"value": 1, "children": [{"value": "x", "children": []}]}},  # recursion
    ],
)
def test_a_rebuilt_model_refuses_what_the_original_refuses(change: dict[str, object]) -> None:
    bad = {**GOOD, **change}
    with pytest.raises(ValidationError):
        Ticket.model_validate(bad)
    with pytest.raises(ValidationError):
        _rebuilt().model_validate(bad)


def test_the_importable_class_is_preferred_and_a_missing_one_is_rebuilt() -> None:
    config = {
        "schema": strict_json_schema(Ticket),
        "schema_name": schema_name(Ticket),
        "schema_model": model_path(Ticket),
    }
    assert output_model(config) is Ticket
    # Airflow loads a DAG file under a mangled module name no other process can import.
    mangled = {**config, "schema_model": "unusual_prefix_0123abcd_classify:Ticket"}
    rebuilt = output_model(mangled)
    assert rebuilt is not None
    assert rebuilt is not Ticket
    assert rebuilt.model_validate(GOOD).priority == 2  # type: ignore[attr-defined]
    # A class that changed since the run started is not trusted with its outputs.
    changed = {**config, "schema": strict_json_schema(Tag)}
    assert output_model(changed) is not Ticket
    assert output_model({"schema": None}) is None


SCRIPT = """
import sys
from typing import Literal
from pydantic import BaseModel
from batchor import BatchItem, BatchJob, BatchRunner, OpenAIProviderConfig, PromptParts

class Label(BaseModel):  # defined in __main__: no other process can import it
    sentiment: Literal["positive", "negative", "neutral"]
    score: float

store, artifacts, base_url = sys.argv[1:4]
job = BatchJob(
    items=[BatchItem(item_id=f"r{i}", payload={"text": f"review {i}"}) for i in range(4)],
    build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
    provider_config=OpenAIProviderConfig(model="gpt-4.1-mini", base_url=base_url),
    structured_output=Label,
)
with BatchRunner(store, artifacts) as runner:
    print(runner.start(job, "main-model").wait().completed)
"""


def test_a_model_defined_in_main_gives_typed_results_in_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, artifacts = f"sqlite:///{tmp_path}/store.db", str(tmp_path / "artifacts")
    (tmp_path / "job.py").write_text(SCRIPT)
    with OpenAIBatchEmulator() as emu:
        env = {**os.environ, "OPENAI_API_KEY": emu.api_key}
        out = subprocess.run(
            [sys.executable, str(tmp_path / "job.py"), store, artifacts, emu.base_url],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
    assert out.strip() == "4"
    with caplog.at_level(logging.DEBUG, logger="batchor"), BatchRunner(store, artifacts) as runner:
        run = runner.get_run("main-model")
        run.refresh()
        results = list(run.results())
    assert len(results) == 4
    for result in results:
        assert isinstance(result.output, BaseModel), result.output
        assert result.output.sentiment in {"positive", "negative", "neutral"}  # type: ignore[attr-defined]
        assert isinstance(result.output.score, float)  # type: ignore[attr-defined]
    assert "typed outputs unavailable" not in caplog.text
