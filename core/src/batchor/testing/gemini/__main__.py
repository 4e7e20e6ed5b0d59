"""Run the Gemini emulator in the foreground until SIGINT or SIGTERM.

Prints the two environment variable assignments that point google-genai's ``Client()`` at it
(``GEMINI_API_KEY=...`` and ``GOOGLE_GEMINI_BASE_URL=...``), one per line, on stdout.
"""

from __future__ import annotations

import sys

from batchor.testing.gemini.service import GeminiBatchEmulator
from batchor.testing.serve import serve


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, serve until a stop signal, return the exit status."""
    return serve(
        prog="python -m batchor.testing.gemini",
        description="Serve an emulator of the Gemini API's Batch Mode and Files API.",
        make=GeminiBatchEmulator,
        environment=lambda emulator: [f"{k}={v}" for k, v in emulator.environment.items()],
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
