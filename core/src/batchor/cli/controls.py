"""Run controls: ``pause``, ``resume`` and ``cancel`` a run by id, from any process."""

from __future__ import annotations

import click

from batchor.cli.exits import errors
from batchor.cli.limits import max_cost_option
from batchor.cli.options import json_option, store_options
from batchor.cli.output import show_summary
from batchor.errors import RunStateError
from batchor.runner import BatchRunner


@click.command()
@click.argument("run_id")
@click.option("--reason", help="Why, shown by status and list [default: paused by request].")
@json_option
@store_options
def pause(
    run_id: str, reason: str | None, as_json: bool, store: str | None, artifacts: str | None
) -> None:
    """Pause RUN_ID: nothing new is sent; batches in flight are still collected by wait.

    A run that is not running is an error (exit 2); pausing a paused run does nothing.
    """
    with errors(RunStateError), BatchRunner(store, artifacts) as runner:
        handle = runner.get_run(run_id)
        summary = handle.pause(reason) if reason else handle.pause()
        show_summary(summary, as_json)


@click.command()
@click.argument("run_id")
@max_cost_option(
    "Set the run's spending cap to this many USD first (a run paused for its budget goes "
    "on once the cap leaves room for its next batch)."
)
@json_option
@store_options
def resume(
    run_id: str,
    max_cost_usd: float | None,
    as_json: bool,
    store: str | None,
    artifacts: str | None,
) -> None:
    """Resume the paused run RUN_ID (also one paused for quota or for its spending cap) and
    take one step of it; needs the API key. Follow it with `batchor wait RUN_ID`.

    A run that is neither paused nor running is an error (exit 2); a running run only
    takes the step (after taking a new --max-cost-usd).
    """
    with errors(RunStateError), BatchRunner(store, artifacts) as runner:
        show_summary(runner.get_run(run_id).resume(max_cost_usd=max_cost_usd), as_json)


@click.command()
@click.argument("run_id")
@click.option(
    "--remote",
    is_flag=True,
    help="Also cancel its batches at the provider (what they answered is still collected).",
)
@json_option
@store_options
def cancel(
    run_id: str, remote: bool, as_json: bool, store: str | None, artifacts: str | None
) -> None:
    """Cancel RUN_ID for good: nothing new is sent and items never sent end cancelled.

    Batches already at the provider run to their end (or, with --remote, are cancelled
    there) and `batchor wait RUN_ID` collects them. A completed run is an error (exit 2).
    """
    with errors(RunStateError), BatchRunner(store, artifacts) as runner:
        show_summary(runner.get_run(run_id).cancel(remote=remote), as_json)
