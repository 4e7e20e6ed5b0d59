"""The steps an asset takes on a batchor run: start it, wait for it, collect its results;
each wrapped so that permanent errors fail without retry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckSeverity, AssetExecutionContext, Failure, MaterializeResult

from batchor import (
    PERMANENT_ERRORS,
    BatchJob,
    BatchRunner,
    CollectResult,
    JobMismatchError,
    RunStateError,
    RunSummary,
    steps,
)

from .destination import render
from .errors import dagster_failures, paused_failure
from .identity import RunKeyFn, partition_of, record_start, resolve_run_id
from .metadata import failure_rate_check, result_metadata

MISMATCH_HINT = (
    "If an earlier materialisation of this partition left this run unfinished and it cannot "
    "take this job, cancel the old run (`batchor cancel RUN_ID --remote`) so the next "
    "materialisation starts a new one, or pass run_key"
)


@dataclass(frozen=True, slots=True)
class WaitSettings:
    """How an asset waits for a run.

    Attributes:
        poll_interval: The longest pause between two polls, in seconds (pauses start at 1 s
            and double while nothing changes).
        timeout: Give up waiting after this many seconds (``None``: never). The run goes
            on; materialising again attaches to it.
        progress_interval: Log the run's progress at least this often, in seconds, even when
            nothing changed (a run also logs each change).
    """

    poll_interval: float = 30.0
    timeout: float | None = None
    progress_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class CollectSettings:
    """What an asset does with a finished run.

    Attributes:
        destination: Template of the results' path or URL.
        max_failure_rate: The failure-rate check passes up to this share of failed items.
        check_severity: Severity of the failure-rate check when it fails.
    """

    destination: str
    max_failure_rate: float = 0.0
    check_severity: AssetCheckSeverity = AssetCheckSeverity.WARN


@dataclass(frozen=True, slots=True)
class Started:
    """The run a materialisation drives.

    Attributes:
        run_id: The run's id.
        reused: Whether it is the run the partition's last materialisation drove, reused
            because the job (model, schema, prompts, source content) is unchanged.
    """

    run_id: str
    reused: bool = False


def start(
    context: AssetExecutionContext,
    runner: BatchRunner,
    job: BatchJob,
    run_key: RunKeyFn | None,
    rerun: bool,
) -> Started:
    """Choose the run (`resolve_run_id`), record it, then start it or attach to it.

    A finished run offered for reuse is attached to with `batchor.steps.start`, which
    submits nothing when the run's job is the same and raises `JobMismatchError` when the
    model, schema, prompts or source content changed: then a new run is started. Permanent
    errors fail without retry (here a `RunStateError` is one too: the run cannot take this
    job, e.g. it was interrupted mid-ingest from a plain iterable, which cannot resume).
    """
    run_id, reusable = resolve_run_id(context, runner, run_key, rerun)
    permanent = (*PERMANENT_ERRORS, RunStateError)
    if reusable is not None:
        record_start(context, reusable)
        with dagster_failures(MISMATCH_HINT, permanent):
            try:
                steps.start(runner, job, reusable)
            except JobMismatchError as exc:
                context.log.info(f"batchor run {reusable} is not reused: {exc}; starting anew")
            else:
                context.log.info(
                    f"batchor run {reusable}: reused, the job is unchanged since the last "
                    "materialisation (nothing submitted; run config rerun: true buys anew)"
                )
                return Started(reusable, reused=True)
    record_start(context, run_id)
    context.log.info(f"batchor run {run_id}: starting or resuming")
    with dagster_failures(MISMATCH_HINT, permanent):
        steps.start(runner, job, run_id)
    return Started(run_id)


def wait(
    context: AssetExecutionContext, runner: BatchRunner, run_id: str, settings: WaitSettings
) -> RunSummary:
    """Poll the run until it is terminal, logging its progress when it changes and at least
    every ``progress_interval`` seconds.

    Raises:
        Failure: The run is paused with nothing in flight (no retry), or ``timeout`` passed
            (retryable: the run goes on and the next attempt attaches to it).
    """
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    interval = min(1.0, settings.poll_interval)
    previous: dict[str, object] | None = None
    logged = time.monotonic()
    while True:
        with dagster_failures():
            summary = steps.poll(runner, run_id)
        state = summary.to_dict()
        now = time.monotonic()
        if state != previous or now - logged >= settings.progress_interval:
            context.log.info(_progress(summary))
            logged = now
        if state != previous:
            interval = min(1.0, settings.poll_interval)
        else:
            interval = min(interval * 2, settings.poll_interval)
        previous = state
        if summary.is_terminal:
            return summary
        if summary.is_stalled:
            raise paused_failure(run_id, summary.pause_reason)
        if deadline is not None and time.monotonic() + interval > deadline:
            raise Failure(
                description=(
                    f"batchor run {run_id!r} is still {summary.status.value} after "
                    f"{settings.timeout} s; it goes on, and materialising again attaches to it"
                ),
                allow_retries=True,
            )
        time.sleep(interval)


def collect(
    context: AssetExecutionContext,
    runner: BatchRunner,
    run_id: str,
    model: str | None,
    settings: CollectSettings,
    reused: bool = False,
) -> MaterializeResult[Any]:
    """Write the terminal run's results to the rendered destination and describe them
    (``reused``: the run is one an earlier materialisation drove)."""
    destination = render(
        settings.destination,
        partition_key=partition_of(context),
        run_id=run_id,
        asset=context.asset_key.to_user_string(),
    )
    with dagster_failures():
        result = steps.collect(runner, run_id, destination)
    context.log.info(
        f"batchor run {run_id}: {result.results} results written to {result.uri} "
        f"({result.run_status})"
    )
    return materialize_result(result, model, settings, reused)


def materialize_result(
    result: CollectResult, model: str | None, settings: CollectSettings, reused: bool = False
) -> MaterializeResult[Any]:
    """The `MaterializeResult` of a collected run: metadata and the failure-rate check."""
    return MaterializeResult(
        metadata=result_metadata(result, model, reused),
        check_results=[
            failure_rate_check(result, settings.max_failure_rate, settings.check_severity)
        ],
    )


def run_model(runner: BatchRunner, run_id: str) -> str:
    """The model a stored run uses (for the usage metadata keys)."""
    return runner.get_run(run_id).model


def _progress(summary: RunSummary) -> str:
    # TODO(issue 17): use the core's progress report once `batchor.steps` has one.
    items = ", ".join(f"{n} {s.value}" for s, n in summary.items.items() if n)
    open_items = summary.total - summary.terminal_items
    cost = "unknown" if summary.cost_usd is None else f"${summary.cost_usd:.4f}"
    return (
        f"batchor run {summary.run_id}: {summary.status.value}; items: {items or 'none yet'} "
        f"({summary.completed} done, {summary.failed} failed, {open_items} in flight); "
        f"{summary.in_flight} batch(es) live; cost so far {cost}"
    )
