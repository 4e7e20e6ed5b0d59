"""Test helpers for batchor users: a local emulator of the OpenAI Files and Batches API.

Importing this package pulls in the standard library only (neither ``openai`` nor ``pytest``).
The ``openai_emulator`` pytest fixture lives in `batchor.testing.pytest_plugin`.
"""

from batchor.testing.emulator import (
    EmulatorFaults,
    EmulatorLimits,
    EmulatorStats,
    OpenAIBatchEmulator,
)

__all__ = ["EmulatorFaults", "EmulatorLimits", "EmulatorStats", "OpenAIBatchEmulator"]
