"""Run the Anthropic emulator in the foreground until SIGINT or SIGTERM.

It prints the environment that points the ``anthropic`` SDK at it, alone on one line:
``ANTHROPIC_BASE_URL=http://127.0.0.1:8000 ANTHROPIC_API_KEY=sk-ant-emulator``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from batchor.testing.anthropic.service import AnthropicBatchEmulator


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, serve until a stop signal, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m batchor.testing.anthropic",
        description="Serve an emulator of the Anthropic Message Batches API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--phase-seconds", type=float, default=0.0, help="least seconds per batch phase"
    )
    parser.add_argument("--data-dir", default=None, help="where to keep batches (default: temp)")
    parser.add_argument("--api-key", default=None, help="the only API key to accept")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    emulator = AnthropicBatchEmulator(
        port=args.port,
        phase_seconds=args.phase_seconds,
        data_dir=args.data_dir,
        api_key=args.api_key,
        host=args.host,
    )
    with emulator:
        print(emulator.environment(), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
