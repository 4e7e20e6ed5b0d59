"""An emulator of the OpenAI Files and Batches API served over loopback HTTP.

Run it standalone with ``python -m batchor.testing.emulator --port 8000``.
"""

from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.inprocess import InProcessBatchTransport
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.service import OpenAIBatchEmulator
from batchor.testing.emulator.stats import EmulatorStats

__all__ = [
    "EmulatorFaults",
    "EmulatorLimits",
    "EmulatorStats",
    "InProcessBatchTransport",
    "OpenAIBatchEmulator",
]
