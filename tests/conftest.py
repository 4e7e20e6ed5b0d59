"""Shared fixtures: every test runs offline, against the emulator or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["batchor.testing.pytest_plugin", "tests.s3_server"]

# Any call that escapes the emulator fails at once instead of reaching a real service.
_NOWHERE = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", _NOWHERE)
    monkeypatch.delenv("BATCHOR_STORE", raising=False)
    monkeypatch.delenv("BATCHOR_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)
