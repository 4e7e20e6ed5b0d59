"""Run the emulator in the foreground until SIGINT or SIGTERM, printing its base URL.

The OpenAI base URL goes to stdout (alone on the first line); the Azure OpenAI endpoint, served
by the same process, to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from batchor.testing.emulator.service import OpenAIBatchEmulator


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, serve until a stop signal, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m batchor.testing.emulator",
        description="Serve an emulator of the OpenAI Files and Batches API "
        "(OpenAI and Azure OpenAI URL shapes).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--phase-seconds", type=float, default=0.0, help="minimum seconds per batch phase"
    )
    parser.add_argument("--data-dir", default=None, help="where to store files (default: temp)")
    parser.add_argument("--api-key", default=None, help="the only API key to accept")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    emulator = OpenAIBatchEmulator(
        port=args.port,
        phase_seconds=args.phase_seconds,
        data_dir=args.data_dir,
        api_key=args.api_key,
        host=args.host,
    )
    with emulator:
        print(emulator.base_url, flush=True)
        print(f"Azure OpenAI endpoint: {emulator.azure_endpoint}", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
