"""The ``webhooks`` commands: ``webhooks serve`` receives OpenAI's batch webhooks and takes a
step of the run that owns each batch."""

from __future__ import annotations

import contextlib

import click

from batchor.cli.exits import OneLineErrorGroup, errors
from batchor.cli.options import store_options
from batchor.errors import BatchorError
from batchor.runner import BatchRunner


@click.group(cls=OneLineErrorGroup)
def webhooks() -> None:
    """Receive the provider's webhooks (OpenAI's batch.* events)."""


@webhooks.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    required=True,
    help="TCP port to listen on (0 picks a free one, printed on start).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@store_options
def serve(port: int, host: str, store: str | None, artifacts: str | None) -> None:
    """Serve a webhook receiver until interrupted (Ctrl-C or SIGTERM end it, exit 0).

    Each POSTed event is checked with the openai SDK against the signing secret in
    OPENAI_WEBHOOK_SECRET: a forged, stale or replayed one is answered 400 and changes
    nothing. A valid batch.completed, batch.failed, batch.expired or batch.cancelled event
    of a batch in the store takes one step of its run (as `batchor wait` would, with the
    provider key from the environment: OPENAI_API_KEY, or Azure's); any other event is
    answered 200 and ignored. Prints the URL it serves on. Keep `batchor wait` (or your
    orchestrator's polling) running beside it: it is the fallback and polls at its longest
    interval while webhooks flow.
    """
    with errors():
        from batchor.webhooks import WebhookServer, webhook_secret

        secret = webhook_secret()  # before the store is opened (or created)
        with BatchRunner(store, artifacts) as runner:
            try:
                server = WebhookServer(runner, host=host, port=port, secret=secret)
            except OSError as exc:
                raise BatchorError(
                    f"cannot serve webhooks on {host}:{port}: {exc.strerror or exc}"
                ) from None
            click.echo(f"receiving webhooks on {server.url}", nl=True)
            try:
                with contextlib.suppress(KeyboardInterrupt):
                    server.serve_forever()
            finally:
                server.stop()
