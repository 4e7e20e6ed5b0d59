"""Fixtures for the Dagster integration tests: an emulator that requires a distinctive key, a
`BatchorResource` on a real SQLite file, an ephemeral Dagster instance, and job builders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

pytest.importorskip("dagster")

from batchor_dagster import BatchorResource, batchor_asset
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DagsterInstance,
    StaticPartitionsDefinition,
)

from batchor import BatchItem, BatchJob, BatchLimits, OpenAIProviderConfig, PromptParts
from batchor.testing import OpenAIBatchEmulator

SECRET = "sk-dagster-test-3f9c1e7a5b"
"""The only key the emulator accepts; no event, metadata or file may contain it."""

DAYS = StaticPartitionsDefinition(["2026-11-23", "2026-11-24"])


class Label(BaseModel):
    """The structured output of the test jobs."""

    label: Literal["positive", "negative", "neutral"]
    note: str | None


def items_for(day: str, n: int = 12) -> list[BatchItem]:
    """``n`` items of one day."""
    return [
        BatchItem(item_id=f"{day}-{i}", payload={"text": f"review {i} of {day}"}) for i in range(n)
    ]


def prompt(item: BatchItem) -> PromptParts:
    """The prompt of a test item."""
    return PromptParts(prompt=str(item.payload["text"]), system="Label the sentiment.")


def day_job(context: AssetExecutionContext, **_: Any) -> BatchJob:
    """A job for the partition's day, in batches of 5 requests; no key, no base URL."""
    return BatchJob(
        items=items_for(context.partition_key),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        structured_output=Label,
        limits=BatchLimits(max_requests=5),
    )


def daily_labels(destination: str, **options: Any) -> AssetsDefinition:
    """The ``labels`` asset of `day_job`, partitioned by `DAYS`, polling every 0.2 s unless
    ``options`` say otherwise."""
    options.setdefault("poll_interval", 0.2)
    return batchor_asset(
        name="labels", job=day_job, destination=destination, partitions_def=DAYS, **options
    )


@pytest.fixture
def emulator() -> Iterator[OpenAIBatchEmulator]:
    """An emulator accepting only `SECRET`."""
    with OpenAIBatchEmulator(api_key=SECRET, phase_seconds=0.05) as emu:
        yield emu


@pytest.fixture
def resource(emulator: OpenAIBatchEmulator, tmp_path: Path) -> BatchorResource:
    """The resource every test asset uses: SQLite file store, local artifacts, emulator."""
    return BatchorResource(
        store=f"sqlite:///{tmp_path}/state/batchor.db",
        artifacts=str(tmp_path / "artifacts"),
        openai_api_key=SECRET,
        openai_base_url=emulator.base_url,
    )


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """One ephemeral instance kept across the materialisations of a test."""
    with DagsterInstance.ephemeral() as inst:
        yield inst
