"""An emulator of the Gemini API's Batch Mode (with the Files API it uses), served over
loopback HTTP so that the real ``google-genai`` SDK talks to it.

Run it standalone with ``python -m batchor.testing.gemini --port 8000``. Importing this
package pulls in the standard library only.
"""

from batchor.testing.gemini.faults import GeminiFaults
from batchor.testing.gemini.service import GeminiBatchEmulator, gemini_limits

__all__ = ["GeminiBatchEmulator", "GeminiFaults", "gemini_limits"]
