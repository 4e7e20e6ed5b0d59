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
    RunStateError,
    RunSummary,
    steps,
)

from .destination import render
from .errors import dagster_failures, paused_failure
from .identity import partition_of
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
    """

    poll_interval: float = 30.0
    timeout: float | None = None


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


def start(runner: BatchRunner, job: BatchJob, run_id: str) -> steps.RunHandle:
    """`batchor.steps.start`, with permanent errors failing without retry (here a
    `RunStateError` is one too: the run cannot take this job, e.g. it was interrupted
    mid-ingest from a plain iterable, which cannot resume)."""
    with dagster_failures(MISMATCH_HINT, (*PERMANENT_ERRORS, RunStateError)):
        return steps.start(runner, job, run_id)


def wait(
    context: AssetExecutionContext, runner: BatchRunner, run_id: str, settings: WaitSettings
) -> RunSummary:
    """Poll the run until it is terminal, logging progress when it changes.

    Raises:
        Failure: The run is paused with nothing in flight (no retry), or ``timeout`` passed
            (retryable: the run goes on and the next attempt attaches to it).
    """
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    interval = min(1.0, settings.poll_interval)
    previous: dict[str, object] | None = None
    while True:
        with dagster_failures():
            summary = steps.poll(runner, run_id)
        state = summary.to_dict()
        if state != previous:
            context.log.info(_progress(summary))
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
) -> MaterializeResult[Any]:
    """Write the terminal run's results to the rendered destination and describe them."""
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
    return materialize_result(result, model, settings)


def materialize_result(
    result: CollectResult, model: str | None, settings: CollectSettings
) -> MaterializeResult[Any]:
    """The `MaterializeResult` of a collected run: metadata and the failure-rate check."""
    return MaterializeResult(
        metadata=result_metadata(result, model),
        check_results=[
            failure_rate_check(result, settings.max_failure_rate, settings.check_severity)
        ],
    )


def run_model(runner: BatchRunner, run_id: str) -> str:
    """The model a stored run uses (for the usage metadata keys)."""
    return runner.get_run(run_id).model


def _progress(summary: RunSummary) -> str:
    items = ", ".join(f"{n} {s.value}" for s, n in summary.items.items() if n)
    return f"batchor run {summary.run_id}: {summary.status.value}; items: {items or 'none yet'}"
