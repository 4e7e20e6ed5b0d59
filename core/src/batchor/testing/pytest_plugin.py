"""A pytest plugin providing the ``openai_emulator`` fixture.

Enable it with ``pytest_plugins = ["batchor.testing.pytest_plugin"]`` in a top-level conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchor.testing.emulator import OpenAIBatchEmulator


@pytest.fixture
def openai_emulator() -> Iterator[OpenAIBatchEmulator]:
    """A started `OpenAIBatchEmulator` (free port, temporary storage), stopped afterwards."""
    with OpenAIBatchEmulator() as emulator:
        yield emulator
