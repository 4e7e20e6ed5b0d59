"""Run the Anthropic emulator in the foreground until SIGINT or SIGTERM.

It prints the environment that points the ``anthropic`` SDK at it, alone on one line:
``ANTHROPIC_BASE_URL=http://127.0.0.1:8000 ANTHROPIC_API_KEY=sk-ant-emulator``.
"""

from __future__ import annotations

import sys

from batchor.testing.anthropic.service import AnthropicBatchEmulator
from batchor.testing.serve import serve


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, serve until a stop signal, return the exit status."""
    return serve(
        prog="python -m batchor.testing.anthropic",
        description="Serve an emulator of the Anthropic Message Batches API.",
        make=AnthropicBatchEmulator,
        environment=lambda emulator: [emulator.environment()],
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
