"""A pytest plugin providing the ``openai_emulator``, ``anthropic_emulator`` and
``gemini_emulator`` fixtures.

Enable it with ``pytest_plugins = ["batchor.testing.pytest_plugin"]`` in a top-level conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchor.testing.anthropic import AnthropicBatchEmulator
from batchor.testing.emulator import OpenAIBatchEmulator
from batchor.testing.gemini import GeminiBatchEmulator


@pytest.fixture
def openai_emulator() -> Iterator[OpenAIBatchEmulator]:
    """A started `OpenAIBatchEmulator` (free port, temporary storage), stopped afterwards."""
    with OpenAIBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicBatchEmulator]:
    """A started `AnthropicBatchEmulator` (free port, temporary storage), stopped afterwards."""
    with AnthropicBatchEmulator() as emulator:
        yield emulator


@pytest.fixture
def gemini_emulator() -> Iterator[GeminiBatchEmulator]:
    """A started `GeminiBatchEmulator` (free port, temporary storage), stopped afterwards."""
    with GeminiBatchEmulator() as emulator:
        yield emulator
