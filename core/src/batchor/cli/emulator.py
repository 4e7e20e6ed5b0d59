"""The built-in emulators: the ``emulator`` command that serves one, and the provider that
``--emulate`` swaps in for one command."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from batchor.cli.exits import errors
from batchor.cli.filejobs import EMULATOR_API_VERSION, Emulated
from batchor.errors import BatchorError

if TYPE_CHECKING:
    from batchor.testing import AnthropicBatchEmulator, GeminiBatchEmulator, OpenAIBatchEmulator

    Server = OpenAIBatchEmulator | AnthropicBatchEmulator | GeminiBatchEmulator

#: The APIs ``batchor emulator --provider`` serves (azure: the OpenAI emulator's Azure routes).
EMULATED_PROVIDERS = ("openai", "azure", "anthropic", "gemini")


@contextlib.contextmanager
def emulated(emulate: bool, provider: str = "openai") -> Iterator[Emulated | None]:
    """A live emulator of ``provider``'s API while the block runs, or None when ``emulate``
    is false. For ``azure`` it is the OpenAI emulator with Azure's limits, reached on its
    Azure routes."""
    if not emulate:
        yield None
        return
    with _server(provider) as server:
        yield _address(server, provider)


def _server(
    provider: str, *, host: str = "127.0.0.1", port: int = 0, phase_seconds: float = 0.0
) -> Server:
    """A (not yet started) emulator of ``provider``'s API."""
    if provider == "anthropic":
        from batchor.testing import AnthropicBatchEmulator

        return AnthropicBatchEmulator(port=port, phase_seconds=phase_seconds, host=host)
    if provider == "gemini":
        from batchor.testing import GeminiBatchEmulator

        return GeminiBatchEmulator(port=port, phase_seconds=phase_seconds, host=host)
    from batchor.testing import EmulatorLimits, OpenAIBatchEmulator

    limits = EmulatorLimits.azure() if provider == "azure" else None
    return OpenAIBatchEmulator(port=port, phase_seconds=phase_seconds, host=host, limits=limits)


def _address(server: Server, provider: str) -> Emulated:
    """Where a running emulator serves ``provider``'s API."""
    from batchor.testing import OpenAIBatchEmulator

    if provider == "azure" and isinstance(server, OpenAIBatchEmulator):
        return Emulated(server.azure_endpoint, server.api_key)
    return Emulated(server.base_url, server.api_key)


def _environment(server: Server) -> list[str]:
    """The environment lines that point a provider's SDK at a running emulator."""
    from batchor.testing import AnthropicBatchEmulator, GeminiBatchEmulator

    if isinstance(server, AnthropicBatchEmulator):
        return [server.environment()]
    if isinstance(server, GeminiBatchEmulator):
        return [" ".join(f"{name}={value}" for name, value in server.environment.items())]
    return [
        f"OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY={server.api_key}",
        f"AZURE_OPENAI_ENDPOINT={server.azure_endpoint} AZURE_OPENAI_API_KEY={server.api_key} "
        f"OPENAI_API_VERSION={EMULATOR_API_VERSION}",
    ]


@contextlib.contextmanager
def provider(emulate: bool) -> Iterator[tuple[str | None, str | None]]:
    """``(base_url, api_key)``: an OpenAI emulator's while the block runs, or (None, None) to
    let the SDK read OPENAI_BASE_URL / OPENAI_API_KEY."""
    with emulated(emulate) as emulator:
        if emulator is None:
            yield None, None
        else:
            yield emulator.base_url, emulator.api_key


@click.command()
@click.option(
    "--provider",
    "provider_name",
    type=click.Choice(EMULATED_PROVIDERS, case_sensitive=False),
    default="openai",
    show_default=True,
    help="Whose batch API to serve: openai (with Azure OpenAI's routes too; azure is the "
    "same server), anthropic (Message Batches) or gemini (Batch Mode and the Files API).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--phase-seconds",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Least time a batch spends in each provider phase.",
)
def emulator(provider_name: str, host: str, port: int, phase_seconds: float) -> None:
    """Serve a batch API emulator until interrupted (Ctrl-C), and print the environment that
    points the provider's SDK at it: for openai, the OpenAI line then the Azure OpenAI line
    (`--provider azure`); for anthropic, ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY; for
    gemini, GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL."""
    with errors():
        server = _server(provider_name, host=host, port=port, phase_seconds=phase_seconds)
        try:
            server.start()
        except OSError as exc:
            raise BatchorError(
                f"cannot serve the emulator on {host}:{port}: {exc.strerror or exc}"
            ) from None
        try:
            # Ctrl-C is taken from the first line printed on: a caller that reads the line
            # and interrupts at once must not find the command still between the two.
            with contextlib.suppress(KeyboardInterrupt):
                for line in _environment(server):
                    click.echo(line)
                while True:
                    time.sleep(3600)
        finally:
            server.stop()
