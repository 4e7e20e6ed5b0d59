"""The built-in emulator: the ``emulator`` command that serves it, and the provider that
``--emulate`` swaps in for one command."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import click

from batchor.cli.exits import errors
from batchor.errors import BatchorError


@contextlib.contextmanager
def provider(emulate: bool) -> Iterator[tuple[str | None, str | None]]:
    """``(base_url, api_key)``: an emulator's while the block runs, or (None, None) to let the
    SDK read OPENAI_BASE_URL / OPENAI_API_KEY."""
    if not emulate:
        yield None, None
        return
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator() as emulator:
        yield emulator.base_url, emulator.api_key


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--phase-seconds",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Least time a batch spends in each provider phase.",
)
def emulator(host: str, port: int, phase_seconds: float) -> None:
    """Serve the OpenAI Batch API emulator until interrupted (Ctrl-C)."""
    from batchor.testing import OpenAIBatchEmulator

    with errors():
        server = OpenAIBatchEmulator(host=host, port=port, phase_seconds=phase_seconds)
        try:
            server.start()
        except OSError as exc:
            raise BatchorError(
                f"cannot serve the emulator on {host}:{port}: {exc.strerror or exc}"
            ) from None
        try:
            click.echo(f"OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY={server.api_key}")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        finally:
            server.stop()
