"""The built-in emulator: the ``emulator`` command that serves it, and the provider that
``--emulate`` swaps in for one command."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from batchor.cli.exits import errors
from batchor.cli.filejobs import EMULATOR_API_VERSION
from batchor.errors import BatchorError

if TYPE_CHECKING:
    from batchor.testing import OpenAIBatchEmulator


@contextlib.contextmanager
def emulated(emulate: bool, *, azure: bool = False) -> Iterator[OpenAIBatchEmulator | None]:
    """A live emulator while the block runs (it speaks both OpenAI's and Azure OpenAI's
    routes, with Azure's limits when ``azure``), or None when ``emulate`` is false."""
    if not emulate:
        yield None
        return
    from batchor.testing import EmulatorLimits, OpenAIBatchEmulator

    limits = EmulatorLimits.azure() if azure else None
    with OpenAIBatchEmulator(limits=limits) as emulator:
        yield emulator


@contextlib.contextmanager
def provider(emulate: bool) -> Iterator[tuple[str | None, str | None]]:
    """``(base_url, api_key)``: an emulator's while the block runs, or (None, None) to let the
    SDK read OPENAI_BASE_URL / OPENAI_API_KEY."""
    with emulated(emulate) as emulator:
        if emulator is None:
            yield None, None
        else:
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
    """Serve the OpenAI Batch API emulator until interrupted (Ctrl-C). It prints the
    environment for OpenAI (first line) and for Azure OpenAI (`--provider azure`, second
    line)."""
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
            click.echo(
                f"AZURE_OPENAI_ENDPOINT={server.azure_endpoint} "
                f"AZURE_OPENAI_API_KEY={server.api_key} OPENAI_API_VERSION={EMULATOR_API_VERSION}"
            )
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        finally:
            server.stop()
