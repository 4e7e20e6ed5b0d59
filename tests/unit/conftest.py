"""Fixtures for the fast engine tests: a runner on the in-memory store and in-memory artifacts,
driving the in-process provider (no socket, no disk but the emulator's scratch directory).

A test changes the provider's behaviour through ``transport.faults`` (live knobs) and reads
what the provider was asked through ``transport.stats`` and ``transport.batches()``. A test
that needs batches to stay in flight for a while overrides ``phase_seconds`` with
``@pytest.mark.parametrize("phase_seconds", [0.3])``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fsspec
import pytest

from batchor import BatchRunner
from batchor.testing import InProcessBatchTransport


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Backoff timing is not what these tests check; keep the waits short.
    monkeypatch.setattr("batchor.engine.backoff.BASE_SECONDS", 0.02)
    monkeypatch.setattr("batchor.engine.collect._CAPACITY_BACKOFF", {"base": 0.02, "cap": 0.1})


@pytest.fixture
def phase_seconds() -> float:
    """How long each emulated batch spends in each phase (0: as fast as possible)."""
    return 0.0


@pytest.fixture
def transport(phase_seconds: float) -> Iterator[InProcessBatchTransport]:
    """The in-process provider, started; its knobs are off until a test turns them on."""
    with InProcessBatchTransport(phase_seconds=phase_seconds) as started:
        yield started


@pytest.fixture
def artifacts_url() -> Iterator[str]:
    """A private folder of fsspec's process-wide memory filesystem, removed afterwards."""
    name = f"batchor-unit-{uuid.uuid4().hex}"
    yield f"memory://{name}/artifacts"
    memory = fsspec.filesystem("memory")
    if memory.exists(f"/{name}"):
        memory.rm(f"/{name}", recursive=True)


@pytest.fixture
def runner(transport: InProcessBatchTransport, artifacts_url: str) -> Iterator[BatchRunner]:
    """A runner on the memory store and memory artifacts, driving ``transport``."""
    with BatchRunner(store="memory://", artifacts=artifacts_url, provider=transport) as opened:
        yield opened
