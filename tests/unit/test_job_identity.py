"""A run id names one job: attaching another job to it (another model, endpoint, schema,
policy, provider, prompt or input) is refused, saying what changed, and sends nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from batchor import (
    BatchItem,
    BatchJob,
    BatchRunner,
    ConfigurationError,
    DuplicateItemError,
    JobMismatchError,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
    RunNotFoundError,
    RunStatus,
)
from batchor.testing import InProcessBatchTransport

from .helpers import MODEL, assert_exactly_once, drive, make_items, make_job


class Other(BaseModel):
    """Another structured output."""

    topic: str


@dataclass(frozen=True)
class ElsewhereConfig(OpenAIProviderConfig):
    """The same wire format under another provider's name."""

    @property
    def provider_name(self) -> str:
        return "elsewhere"

    def record(self) -> dict[str, Any]:
        return {**super().record(), "provider": "elsewhere"}


@pytest.fixture
def started(runner: BatchRunner, transport: InProcessBatchTransport) -> str:
    """A run of five items, finished."""
    drive(runner.start(make_job(make_items(5), max_requests=2), "job"))
    assert transport.stats.batches_created == 3
    return "job"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model": "gpt-4.1"}, "model"),
        ({"endpoint": "/v1/chat/completions"}, "endpoint"),
        ({"max_attempts": 5}, "max_attempts"),
        ({"max_requests": 3}, "max_requests"),
        ({"max_bytes": 100_000}, "max_bytes"),
        ({"structured": Other}, "schema"),
        ({"structured": None}, "schema"),
        ({"request_params": {"temperature": 0.2}}, "request_params"),
    ],
    ids=lambda value: str(value) if isinstance(value, str) else "-".join(value),
)
def test_a_changed_job_is_refused_naming_what_changed(
    runner: BatchRunner,
    transport: InProcessBatchTransport,
    started: str,
    change: dict[str, Any],
    named: str,
) -> None:
    settings: dict[str, Any] = {"max_requests": 2, **change}
    with pytest.raises(JobMismatchError) as caught:
        runner.start(make_job(make_items(5), **settings), started)
    message = str(caught.value)
    assert f"({named}" in message or f", {named}" in message
    assert "changed" in message
    assert "use a new run_id" in message
    assert transport.stats.batches_created == 3  # nothing sent for the other job
    assert runner.get_run(started).summary().status is RunStatus.COMPLETED


def test_an_openai_run_with_another_model_names_the_model_only(
    runner: BatchRunner, started: str
) -> None:
    with pytest.raises(JobMismatchError, match=r"\(model changed\)"):
        runner.start(make_job(make_items(5), max_requests=2, model="gpt-4o-mini"), started)


def test_a_job_for_another_provider_is_refused_naming_both(
    runner: BatchRunner, transport: InProcessBatchTransport, started: str
) -> None:
    job = BatchJob(
        items=make_items(5),
        build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
        provider_config=ElsewhereConfig(model=MODEL),
    )
    with pytest.raises(JobMismatchError) as caught:
        runner.start(job, started)
    message = str(caught.value)
    assert "started on provider openai" in message
    assert "this job is for elsewhere" in message
    assert transport.stats.batches_created == 3


def test_settings_that_are_not_the_job_may_change(
    runner: BatchRunner, transport: InProcessBatchTransport, started: str
) -> None:
    again = runner.start(make_job(make_items(5), max_requests=2, token_limit=10_000), started)
    assert again.summary().completed == 5
    assert transport.stats.batches_created == 3


def test_other_prompts_for_the_same_items_are_refused(
    runner: BatchRunner, transport: InProcessBatchTransport, started: str
) -> None:
    job = make_job(
        make_items(5),
        max_requests=2,
        build_prompt=lambda item: PromptParts(prompt=f"Rate: {item.payload['text']}"),
    )
    with pytest.raises(JobMismatchError, match="different prompts"):
        runner.start(job, started)
    assert transport.stats.batches_created == 3


def test_a_changed_input_file_is_refused(
    runner: BatchRunner, transport: InProcessBatchTransport, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(3)))
    drive(runner.start(make_job(JsonlItemSource(path, id_field="id")), "file-run"))
    with path.open("a") as fh:
        fh.write(json.dumps({"id": 3, "text": "t3"}) + "\n")

    with pytest.raises(JobMismatchError, match="different input"):
        runner.start(make_job(JsonlItemSource(path, id_field="id")), "file-run")
    assert transport.stats.batches_created == 1
    assert_exactly_once(transport)


@pytest.mark.parametrize("run_id", ["-leading-dash", "has space", "x" * 201])
def test_an_unusable_run_id_is_refused_before_anything_exists(
    runner: BatchRunner, transport: InProcessBatchTransport, run_id: str
) -> None:
    with pytest.raises(ConfigurationError, match="run_id"):
        runner.start(make_job(make_items(2)), run_id)
    assert transport.stats.total_calls == 0
    with pytest.raises(RunNotFoundError):
        runner.get_run(run_id)


def test_a_duplicate_item_id_is_refused_and_leaves_no_run(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = [*make_items(3), BatchItem(item_id="item-1", payload={"text": "again"})]
    with pytest.raises(DuplicateItemError, match="duplicate item_id 'item-1'"):
        runner.start(make_job(items), "dupes")
    with pytest.raises(RunNotFoundError):
        runner.get_run("dupes")
    assert transport.stats.total_calls == 0
