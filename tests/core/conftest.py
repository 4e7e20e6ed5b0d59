"""Fixtures for core tests: a runner on a real SQLite file, items, and job builders."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    OpenAIProviderConfig,
    PromptParts,
    RetryPolicy,
    Run,
)
from batchor.testing import OpenAIBatchEmulator


class Sentiment(BaseModel):
    """The structured output most tests ask for."""

    label: Literal["positive", "negative", "neutral"]
    score: float
    note: str | None


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Backoff timing is not what these tests check; keep the waits short.
    monkeypatch.setattr("batchor.engine.backoff.BASE_SECONDS", 0.05)
    monkeypatch.setattr("batchor.engine.collect._CAPACITY_BACKOFF", {"base": 0.05, "cap": 0.2})


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nor is the first pause of a wait left at its default (0.5 s, doubling while nothing
    # changes): most runs here end within a few emulator steps, and a wait would spend most
    # of a test asleep. A test that checks the pauses passes its own, which still win.
    monkeypatch.setattr(Run, "wait", functools.partialmethod(Run.wait, poll_interval=0.05))


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[BatchRunner]:
    with BatchRunner(
        store=f"sqlite:///{tmp_path}/store/batchor.db", artifacts=tmp_path / "artifacts"
    ) as r:
        yield r


def make_items(n: int, prefix: str = "item", text: str = "review {i}") -> list[BatchItem]:
    return [
        BatchItem(item_id=f"{prefix}-{i}", payload={"text": text.format(i=i)}, metadata={"row": i})
        for i in range(n)
    ]


def prompt(item: BatchItem) -> PromptParts:
    return PromptParts(prompt=str(item.payload["text"]), system="Label the sentiment.")


MakeJob = Callable[..., BatchJob]


@pytest.fixture
def make_job(openai_emulator: OpenAIBatchEmulator) -> MakeJob:
    """A job against the emulator; keyword arguments override the defaults."""

    def build(
        items: Any,
        *,
        endpoint: Literal["/v1/responses", "/v1/chat/completions"] = "/v1/responses",
        structured: type[BaseModel] | None = Sentiment,
        max_attempts: int = 3,
        max_requests: int = 50_000,
        max_bytes: int = 190_000_000,
        model: str = "gpt-4.1-mini",
    ) -> BatchJob:
        return BatchJob(
            items=items,
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model=model,
                endpoint=endpoint,
                base_url=openai_emulator.base_url,
                api_key=openai_emulator.api_key,
            ),
            structured_output=structured,
            retry_policy=RetryPolicy(max_attempts=max_attempts),
            limits=BatchLimits(max_requests=max_requests, max_bytes=max_bytes),
        )

    return build
