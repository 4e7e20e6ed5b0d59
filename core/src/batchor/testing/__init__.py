"""Test helpers for batchor users: a local emulator of the OpenAI Files and Batches API,
served over loopback HTTP (`OpenAIBatchEmulator`) or called in process
(`InProcessBatchTransport`, for ``BatchRunner(provider=...)``).

Importing this package pulls in the standard library only (neither ``openai`` nor ``pytest``).
The ``openai_emulator`` pytest fixture lives in `batchor.testing.pytest_plugin`.
"""

from batchor.testing.anthropic import (
    AnthropicBatchEmulator,
    AnthropicEmulatorFaults,
    AnthropicEmulatorLimits,
)
from batchor.testing.emulator import (
    EmulatorFaults,
    EmulatorLimits,
    EmulatorStats,
    InProcessBatchTransport,
    OpenAIBatchEmulator,
)
from batchor.testing.gemini import GeminiBatchEmulator, GeminiFaults

__all__ = [
    "AnthropicBatchEmulator",
    "AnthropicEmulatorFaults",
    "AnthropicEmulatorLimits",
    "EmulatorFaults",
    "EmulatorLimits",
    "EmulatorStats",
    "GeminiBatchEmulator",
    "GeminiFaults",
    "InProcessBatchTransport",
    "OpenAIBatchEmulator",
]
