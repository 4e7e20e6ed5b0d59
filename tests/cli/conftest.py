"""Fixtures for the CLI tests: the real ``batchor`` group in-process (click's CliRunner) on a
real SQLite store under tmp_path (the working directory), against a live emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from batchor.cli.main import cli
from batchor.testing import OpenAIBatchEmulator

Invoke = Callable[..., Result]


@pytest.fixture
def invoke() -> Invoke:
    """Run ``batchor ARGS...`` in-process; stdout and stderr are kept apart."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args))

    return run


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBatchEmulator]:
    """A live emulator that OPENAI_BASE_URL and OPENAI_API_KEY point at."""
    with OpenAIBatchEmulator() as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        yield emu


@pytest.fixture
def slow_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBatchEmulator]:
    """Like ``emulator``, but each batch phase lasts 0.3 s, so a batch stays at the provider
    long enough to be paused, cancelled or waited on."""
    with OpenAIBatchEmulator(phase_seconds=0.3) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        yield emu
