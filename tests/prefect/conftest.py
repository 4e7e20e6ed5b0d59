"""Fixtures for the Prefect integration: one Prefect test server for the whole session (it
takes 10-15 s to start), with results and caches in a private directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

pytest.importorskip("prefect")
pytest.importorskip("batchor_prefect")

from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOCAL_STORAGE_PATH,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness

from batchor import BatchItem, PromptParts


class Sentiment(BaseModel):
    """The structured output of the test jobs."""

    label: Literal["positive", "negative", "neutral"]
    note: str | None


def make_items(n: int) -> list[BatchItem]:
    """``n`` items ``item-0`` ... with a review text each."""
    return [BatchItem(item_id=f"item-{i}", payload={"text": f"review {i}"}) for i in range(n)]


def prompt(item: BatchItem) -> PromptParts:
    """The request for one test item."""
    return PromptParts(prompt=str(item.payload["text"]), system="Label the sentiment.")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect test server for the session; task results (the caches) are written under a
    temporary directory. Yields the API URL."""
    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        pytest.MonkeyPatch.context() as patch,
        temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: storage}),
    ):
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        with prefect_test_harness(server_startup_timeout=None):
            yield str(PREFECT_API_URL.value())


@pytest.fixture(autouse=True)
def _prefect(prefect_server: str) -> str:
    return prefect_server


@pytest.fixture
def results_dir() -> Path:
    """Where Prefect persists task results (cache records) in this session."""
    return Path(PREFECT_LOCAL_STORAGE_PATH.value())
