"""Commands that drive runs: ``run`` (start and wait, write the results), ``start`` (submit
and return) and ``wait`` (follow a run to its end)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import click

from batchor.cli.emulator import emulated
from batchor.cli.exits import EXIT_ERROR, RESUME, DeadlinePassed, deadline, errors, exit_code
from batchor.cli.filejobs import JobSpec, build_job, env_setting
from batchor.cli.limits import JobLimits, limit_options
from batchor.cli.options import job_options, json_option, poll_interval_option, store_options
from batchor.cli.output import fail, run_progress, show_summary
from batchor.errors import ConfigurationError, ProviderAuthError, WaitTimeout
from batchor.jobs import BatchJob
from batchor.providers.registry import ProviderConfigs
from batchor.results import RunSummary
from batchor.runner import BatchRunner, new_run_id


@click.command()
@job_options
@limit_options
@click.option(
    "--output",
    help="Results file, a path or an object-store URL (s3://...): .jsonl, .csv or .parquet "
    "[default .batchor/results/RUN_ID.jsonl].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    help="Give up after this many seconds (exit 1), also while the provider is unreachable; "
    "the run goes on: the same command with its --run-id resumes it.",
)
@poll_interval_option
@json_option
@store_options
def run(
    spec: JobSpec,
    limits: JobLimits,
    output: str | None,
    timeout: float | None,
    poll_interval: float,
    as_json: bool,
    store: str | None,
    artifacts: str | None,
) -> None:
    """Run input files through the Batch API to the end and write the results.

    INPUT is a .csv, .jsonl/.ndjson or .parquet file; several are read one after another,
    in the order given, as one input.

    Exit codes: 0 every item completed, 3 completed with failures, 2 bad input, 1 otherwise
    (also when --timeout passed); 130 on Ctrl-C and 143 on SIGTERM (the run goes on).
    """
    run_id = spec.run_id or new_run_id()
    resume = resume_hint(run_id, given=spec.run_id is not None)
    with errors(resume=resume), emulated(spec.emulate, spec.provider) as emulator:
        job = limits.apply(build_job(spec, emulator=emulator))
        require_credentials(spec, job.provider_config, emulated=emulator is not None, command="run")
        with BatchRunner(store, artifacts) as runner:
            code = run_to_end(
                runner, job, run_id, output, poll_interval, as_json, timeout=timeout, resume=resume
            )
    raise SystemExit(code)


def resume_hint(run_id: str, *, given: bool) -> str:
    """How to go on with a run that ``run`` or ``start`` left (interrupted, timed out)."""
    if given:
        return f"run {run_id!r} is durable: run the same command again to resume it"
    return (
        f"run {run_id!r} is durable: run the same command again with --run-id {run_id} to resume it"
    )


#: The providers whose SDK is an extra: their name in messages, and where their key is read.
_SDK_KEYS = {
    "anthropic": ("Anthropic", "the ANTHROPIC_API_KEY environment variable"),
    "gemini": ("Gemini", "the GEMINI_API_KEY environment variable (or GOOGLE_API_KEY)"),
}


def require_credentials(
    spec: JobSpec, config: ProviderConfigs, *, emulated: bool, command: str
) -> None:
    """Fail before anything is created when the provider's SDK (an extra, for Anthropic and
    Gemini) is not installed or its key (and, for Azure OpenAI, its endpoint and API version)
    is not at hand, in the CLI's terms.

    Raises:
        ConfigurationError: names the extra to install, or the option or environment
            variable to set.
    """
    if command == "run":
        hint = "or pass --emulate to try the command against the built-in emulator"
    else:
        hint = "or try it first with `batchor run ... --emulate` (the built-in emulator)"
    sdk_key = _SDK_KEYS.get(spec.provider)
    if sdk_key is not None:
        try:
            # No call is made: the SDK is imported (ConfigurationError naming the extra) and
            # the key looked for, the config's own (the emulator's) first.
            config.transport().check_credentials()
        except ProviderAuthError:
            name, where = sdk_key
            raise ConfigurationError(f"no {name} API key: set {where}, {hint}") from None
        return
    if emulated:
        return
    if spec.provider != "azure":
        if not env_setting("OPENAI_API_KEY"):
            raise ConfigurationError(
                f"no OpenAI API key: set the OPENAI_API_KEY environment variable, {hint}"
            )
        return
    if not (spec.azure_endpoint or env_setting("AZURE_OPENAI_ENDPOINT")):
        raise ConfigurationError(
            "no Azure OpenAI endpoint: pass --azure-endpoint https://NAME.openai.azure.com "
            "or set the AZURE_OPENAI_ENDPOINT environment variable"
        )
    if not (spec.api_version or env_setting("OPENAI_API_VERSION")):
        raise ConfigurationError(
            "no Azure OpenAI API version: pass --api-version (e.g. 2024-10-21) or set the "
            "OPENAI_API_VERSION environment variable"
        )
    if not (env_setting("AZURE_OPENAI_API_KEY") or env_setting("AZURE_OPENAI_AD_TOKEN")):
        raise ConfigurationError(
            f"no Azure OpenAI API key: set the AZURE_OPENAI_API_KEY environment variable, {hint}"
        )


def run_to_end(
    runner: BatchRunner,
    job: BatchJob,
    run_id: str | None,
    output: str | None,
    poll_interval: float,
    as_json: bool = False,
    *,
    timeout: float | None = None,
    resume: str = RESUME,
) -> int:
    """Start (or resume) the run, wait for its end with progress bars, write its results and
    print its summary; returns the exit code its status calls for. Past ``timeout`` seconds
    (start included, however long the provider takes) it fails with exit 1."""
    started = time.monotonic()
    run_id = run_id or new_run_id()
    try:
        with deadline(timeout), run_progress() as progress:
            handle = runner.start(job, run_id, on_ingest=progress.ingested)
            left = None if timeout is None else max(timeout - (time.monotonic() - started), 0.0)
            summary = handle.wait(
                left,
                max_poll_interval=poll_interval,
                on_progress=progress.reporter,
                progress_every=progress.EVERY,
            )
    except WaitTimeout as exc:
        timed_out(run_id, exc.summary, timeout, as_json, resume)
    except DeadlinePassed:
        timed_out(run_id, _stored_summary(runner, run_id), timeout, as_json, resume)
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


def timed_out(
    run_id: str, summary: RunSummary | None, timeout: float | None, as_json: bool, resume: str
) -> NoReturn:
    """Fail with exit 1: the run did not end within ``timeout`` seconds."""
    if summary is None:
        fail(f"run {run_id!r} was still starting after {timeout or 0:g} s; {resume}", EXIT_ERROR)
    if as_json:
        show_summary(summary, as_json)
    done = f"{summary.terminal_items}/{summary.total} items done"
    fail(
        f"run {run_id!r} is still {summary.status.value} after {timeout or 0:g} s ({done}); "
        f"{resume}",
        EXIT_ERROR,
    )


def _stored_summary(runner: BatchRunner, run_id: str) -> RunSummary | None:
    """The run's summary read from the store, or None if it is not there (yet)."""
    try:
        return runner.get_run(run_id).summary()
    except Exception:
        return None


@click.command()
@job_options
@limit_options
@json_option
@store_options
def start(
    spec: JobSpec, limits: JobLimits, as_json: bool, store: str | None, artifacts: str | None
) -> None:
    """Start a run of input files and return once its batches are submitted.

    Takes the same INPUT files and options as run (without --emulate, whose emulator would
    stop on return); the same --run-id resumes the run. Prints the run id and summary;
    follow the run with `batchor wait RUN_ID`.
    """
    run_id = spec.run_id or new_run_id()
    with errors(resume=resume_hint(run_id, given=spec.run_id is not None)):
        if spec.emulate:
            raise ConfigurationError(
                "--emulate cannot be used with start: the built-in emulator stops when start "
                "returns; serve one with `batchor emulator` and set the environment it prints "
                "instead"
            )
        job = limits.apply(build_job(spec))
        require_credentials(spec, job.provider_config, emulated=False, command="start")
        with BatchRunner(store, artifacts) as runner:
            with run_progress(results=False) as progress:
                handle = runner.start(job, run_id, on_ingest=progress.ingested)
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
    failures, 1 otherwise (cancelled, paused with nothing in flight, --timeout passed);
    130 on Ctrl-C and 143 on SIGTERM (the run goes on).
    """
    with errors(), BatchRunner(store, artifacts) as runner:
        handle = runner.get_run(run_id)
        go_on = "it goes on: wait again to follow it"
        try:
            with deadline(timeout), run_progress(ingest=False) as progress:
                summary = handle.wait(
                    timeout,
                    max_poll_interval=poll_interval,
                    on_progress=progress.reporter,
                    progress_every=progress.EVERY,
                )
        except WaitTimeout as exc:
            timed_out(run_id, exc.summary, timeout, as_json, go_on)
        except DeadlinePassed:
            timed_out(run_id, _stored_summary(runner, run_id), timeout, as_json, go_on)
        show_summary(summary, as_json)
    raise SystemExit(exit_code(summary.status))
