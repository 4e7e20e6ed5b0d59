"""The ``batchor`` command group: wires the command modules together (``runs``, ``controls``,
``inspect``, ``db``, ``emulator``, ``demo``, ``webhooks``) and documents the exit codes."""

from __future__ import annotations

import logging
import sys

import click

from batchor.cli.artifacts import export_artifacts, prune_artifacts
from batchor.cli.controls import cancel, pause, resume
from batchor.cli.db import db
from batchor.cli.demo import demo
from batchor.cli.emulator import emulator
from batchor.cli.estimate import estimate
from batchor.cli.exits import EXIT_CODES_HELP, OneLineErrorGroup
from batchor.cli.inspect import list_runs, results, status
from batchor.cli.runs import run, start, wait
from batchor.cli.webhooks import webhooks


@click.group(
    cls=OneLineErrorGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP,
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does; show tracebacks.")
@click.version_option(package_name="batchor")
def cli(verbose: bool) -> None:
    """batchor: durable runs of large workloads through the batch APIs of OpenAI, Azure
    OpenAI, Anthropic and Gemini (see --provider).

    Start a run with `run` (to the end) or `start` (submit and return), follow it with
    `wait`, inspect it with `status`, `list` and `results`, steer it with `pause`, `resume`
    and `cancel`. `estimate` prices a job without submitting it; `export-artifacts` and
    `prune-artifacts` keep and reclaim a run's files. status, list, results, estimate and
    the artifact commands need no API key.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


for _command in (
    run,
    start,
    wait,
    status,
    list_runs,
    results,
    pause,
    resume,
    cancel,
    estimate,
    export_artifacts,
    prune_artifacts,
    db,
    emulator,
    demo,
    webhooks,
):
    cli.add_command(_command)


def main() -> None:
    """The console-script entry point."""
    cli(prog_name="batchor")
