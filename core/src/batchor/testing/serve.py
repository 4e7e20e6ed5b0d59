"""Running a provider emulator in the foreground, for ``python -m batchor.testing.<provider>``."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any


def serve(
    *,
    prog: str,
    description: str,
    make: Callable[..., Any],
    environment: Callable[[Any], Iterable[str]],
    argv: list[str] | None = None,
) -> int:
    """Parse ``--host --port --phase-seconds --data-dir --api-key``, start ``make(...)`` with
    them, print ``environment(emulator)`` (one line each) and serve until SIGINT or SIGTERM;
    returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--phase-seconds", type=float, default=0.0, help="least seconds per batch phase"
    )
    parser.add_argument("--data-dir", default=None, help="where to keep files (default: temp)")
    parser.add_argument("--api-key", default=None, help="the only API key to accept")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    emulator = make(
        port=args.port,
        phase_seconds=args.phase_seconds,
        data_dir=args.data_dir,
        api_key=args.api_key,
        host=args.host,
    )
    with emulator:
        for line in environment(emulator):
            print(line, flush=True)
        while not stop.wait(0.5):
            pass
    return 0
