"""Commands that drive runs: ``run`` (start and wait, write the results), ``start`` (submit
and return) and ``wait`` (follow a run to its end)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from batchor.cli.emulator import provider
from batchor.cli.exits import EXIT_ERROR, errors, exit_code
from batchor.cli.filejobs import JobSpec, build_job
from batchor.cli.options import job_options, json_option, poll_interval_option, store_options
from batchor.cli.output import fail, run_progress, show_summary
from batchor.errors import ConfigurationError, WaitTimeout
from batchor.jobs import BatchJob
from batchor.runner import BatchRunner


@click.command()
@job_options
@click.option(
    "--output",
    help="Results file, a path or an object-store URL (s3://...): .jsonl, .csv or .parquet "
    "[default .batchor/results/RUN_ID.jsonl].",
)
@poll_interval_option
@json_option
@store_options
def run(
    spec: JobSpec,
    output: str | None,
    poll_interval: float,
    as_json: bool,
    store: str | None,
    artifacts: str | None,
) -> None:
    """Run input files through the Batch API to the end and write the results.

    INPUT is a .csv, .jsonl/.ndjson or .parquet file; several are read one after another,
    in the order given, as one input.

    Exit codes: 0 every item completed, 3 completed with failures, 2 bad input, 1 otherwise.
    """
    with errors(), provider(spec.emulate) as (base_url, api_key):
        job = build_job(spec, base_url=base_url, api_key=api_key)
        with BatchRunner(store, artifacts) as runner:
            code = run_to_end(runner, job, spec.run_id, output, poll_interval, as_json)
    raise SystemExit(code)


def run_to_end(
    runner: BatchRunner,
    job: BatchJob,
    run_id: str | None,
    output: str | None,
    poll_interval: float,
    as_json: bool = False,
) -> int:
    """Start (or resume) the run, wait for its end with progress bars, write its results and
    print its summary; returns the exit code its status calls for."""
    started = time.monotonic()
    with run_progress() as progress:
        handle = runner.start(job, run_id, on_ingest=progress.ingested)
        progress.update(handle.summary())
        summary = handle.wait(max_poll_interval=poll_interval, on_progress=progress.update)
    path = output or str(Path(".batchor/results") / f"{handle.run_id}.jsonl")
    count = handle.export_results(path)
    show_summary(
        summary,
        as_json,
        note=(
            f"{count} results in [bold]{path}[/bold] "
            f"({time.monotonic() - started:.1f} s); run id [bold]{handle.run_id}[/bold]"
        ),
        extra={"results_file": str(path), "results_written": count},
    )
    return exit_code(summary.status)


@click.command()
@job_options
@json_option
@store_options
def start(spec: JobSpec, as_json: bool, store: str | None, artifacts: str | None) -> None:
    """Start a run of input files and return once its batches are submitted.

    Takes the same INPUT files and options as run (without --emulate, whose emulator would
    stop on return); the same --run-id resumes the run. Prints the run id and summary;
    follow the run with `batchor wait RUN_ID`.
    """
    with errors():
        if spec.emulate:
            raise ConfigurationError(
                "--emulate cannot be used with start: the built-in emulator stops when start "
                "returns; serve one with `batchor emulator` and set OPENAI_BASE_URL instead"
            )
        job = build_job(spec, base_url=None, api_key=None)
        with BatchRunner(store, artifacts) as runner:
            with run_progress(results=False) as progress:
                handle = runner.start(job, spec.run_id, on_ingest=progress.ingested)
                summary = handle.summary()
                progress.update(summary)
            show_summary(
                summary,
                as_json,
                note=(
                    f"run id [bold]{handle.run_id}[/bold]; follow it with "
                    f"[bold]batchor wait {handle.run_id}[/bold]"
                ),
            )


@click.command()
@click.argument("run_id")
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    help="Give up after this many seconds (exit 1); the run goes on.",
)
@poll_interval_option
@json_option
@store_options
def wait(
    run_id: str,
    timeout: float | None,
    poll_interval: float,
    as_json: bool,
    store: str | None,
    artifacts: str | None,
) -> None:
    """Drive the run RUN_ID (poll, collect, resubmit) until it ends, showing progress.

    Needs the API key. Exit codes as for run: 0 every item completed, 3 completed with
    failures, 1 otherwise (cancelled, paused with nothing in flight, --timeout passed).
    """
    with errors(), BatchRunner(store, artifacts) as runner:
        handle = runner.get_run(run_id)
        try:
            with run_progress(ingest=False) as progress:
                summary = handle.wait(
                    timeout, max_poll_interval=poll_interval, on_progress=progress.update
                )
        except WaitTimeout as exc:
            if as_json:
                show_summary(exc.summary, as_json)
            done = f"{exc.summary.terminal_items}/{exc.summary.total} items done"
            fail(
                f"run {run_id!r} is still {exc.summary.status.value} after {timeout:g} s "
                f"({done}); it goes on: wait again to follow it",
                EXIT_ERROR,
            )
        show_summary(summary, as_json)
    raise SystemExit(exit_code(summary.status))
