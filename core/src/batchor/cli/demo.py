"""The ``demo`` command: the bundled job run through the built-in emulator."""

from __future__ import annotations

import time

import click

from batchor.cli.emulator import provider
from batchor.cli.exits import errors
from batchor.cli.options import store_options
from batchor.cli.runs import run_to_end
from batchor.runner import BatchRunner


@click.command()
@store_options
def demo(store: str | None, artifacts: str | None) -> None:
    """Run the bundled demo (1,000 product reviews, structured output) against the emulator
    on the embedded defaults, and print where the results are."""
    from batchor.demo import demo_job

    with errors(), provider(True) as (base_url, api_key):
        job = demo_job(base_url=base_url, api_key=api_key)
        with BatchRunner(store, artifacts) as runner:
            code = run_to_end(runner, job, time.strftime("demo-%Y%m%d-%H%M%S"), None, 0.5)
    raise SystemExit(code)
