"""An emulator of the Anthropic Message Batches API served over loopback HTTP.

Run it standalone with ``python -m batchor.testing.anthropic --port 8000``. Importing it pulls
in the standard library and batchor's own dependencies only (not ``anthropic``).
"""

from batchor.testing.anthropic.faults import AnthropicEmulatorFaults
from batchor.testing.anthropic.limits import AnthropicEmulatorLimits
from batchor.testing.anthropic.service import AnthropicBatchEmulator

__all__ = [
    "AnthropicBatchEmulator",
    "AnthropicEmulatorFaults",
    "AnthropicEmulatorLimits",
]
