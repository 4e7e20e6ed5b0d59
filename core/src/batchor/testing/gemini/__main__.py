"""Run the Gemini emulator in the foreground until SIGINT or SIGTERM.

Prints the two environment variable assignments that point google-genai's ``Client()`` at it
(``GEMINI_API_KEY=...`` and ``GOOGLE_GEMINI_BASE_URL=...``), one per line, on stdout.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from batchor.testing.gemini.service import GeminiBatchEmulator


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, serve until a stop signal, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m batchor.testing.gemini",
        description="Serve an emulator of the Gemini API's Batch Mode and Files API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--phase-seconds", type=float, default=0.0, help="minimum seconds per batch state"
    )
    parser.add_argument("--data-dir", default=None, help="where to store files (default: temp)")
    parser.add_argument("--api-key", default=None, help="the only API key to accept")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    emulator = GeminiBatchEmulator(
        port=args.port,
        phase_seconds=args.phase_seconds,
        data_dir=args.data_dir,
        api_key=args.api_key,
        host=args.host,
    )
    with emulator:
        for name, value in emulator.environment.items():
            print(f"{name}={value}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
