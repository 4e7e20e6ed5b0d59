"""The Prefect tasks: start a run (cached on its run key), wait for it with progress in the task
logs, collect its results (cached on run and destination). Transient failures are retried,
the core's permanent errors are not; only small handles are returned and persisted."""

from __future__ import annotations

import os
from typing import Any

from prefect import get_run_logger, task

from batchor import RunSummary, steps
from batchor.errors import RunNotFoundError
from batchor.progress import DEFAULT_PROGRESS_EVERY, Progress
from batchor.steps import JobSpec, build_job, describe_job
from batchor_prefect.config import BatchorConfig, resolve_config
from batchor_prefect.keys import collect_cache_key, start_cache_key
from batchor_prefect.retries import retry_unless_permanent

RETRIES = 3
"""How many times a task retries a transient failure."""
RETRY_DELAYS: list[float] = [10, 60, 300]
"""Seconds before each retry."""
_RETRIED: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_unless_permanent,
}
_CACHED: dict[str, Any] = {"persist_result": True, "result_serializer": "json", **_RETRIED}


@task(
    name="batchor-start",
    task_run_name="start-{run_key}",
    cache_key_fn=start_cache_key,
    **_CACHED,
)
def start_batch_run(
    job: JobSpec,
    run_key: str,
    config: BatchorConfig | str | None = None,
    deadline: steps.DeadlineSpec | None = None,
    max_cost_usd: float | str | None = None,
) -> steps.RunHandle:
    """Create the batchor run ``run_key`` for ``job``, or attach to it; read the input and
    submit what is ready (`batchor.steps.start`). Never submits a batch twice, whatever
    retries or re-runs call it.

    Cached on ``run_key`` and the store: a later flow run with the same key gets the cached
    handle without calling the core. The persisted result is the `batchor.steps.RunHandle`
    (run id and job fingerprint) only.

    Args:
        job: A `batchor.BatchJob`, a callable returning one (called inside the task) or the
            ``"module:name"`` import path of either. Wrap a job object in
            ``prefect.utilities.annotations.quote`` so Prefect does not walk its items.
        run_key: The run id (see `batchor.run_id_from` and `flow_run_key`).
        config: A `BatchorConfig`, the name of a saved one, or ``None`` for the environment.
        deadline: When the run must end, over the job's own (`batchor.BatchJob.deadline`):
            a ``timedelta`` from the run's creation, an aware ``datetime``, seconds, or an
            ISO 8601 datetime with offset (the forms a deployment's JSON parameters carry).
        max_cost_usd: The run's spending cap in USD, over the job's own. An existing run's
            cap is only ever raised; and a cached start does not reach the run at all:
            raise a stopped run's cap with ``batchor resume RUN --max-cost-usd N``.

    Raises:
        ConfigurationError: An invalid limit, among others (not retried).
    """
    logger = get_run_logger()
    block = resolve_config(config)
    built = build_job(job, deadline=deadline, max_cost_usd=max_cost_usd)
    with block.runner() as runner:
        started = steps.start(runner, built, run_key)
    logger.info("started from %s: %s", describe_job(job), Progress.of(started.summary).describe())
    return started.handle


@task(
    name="batchor-wait",
    task_run_name="wait-{run_id}",
    persist_result=False,
    **_RETRIED,
)
def wait_for_batch_run(
    run_id: str,
    config: BatchorConfig | str | None = None,
    *,
    timeout: float | None = None,
    poll_interval: float = 0.5,
    max_poll_interval: float = 30.0,
    progress_every: float = DEFAULT_PROGRESS_EVERY,
) -> RunSummary:
    """Drive the run until it is terminal (`batchor.steps.wait`): poll, collect ended
    batches, resubmit; the pause between steps starts at ``poll_interval`` and doubles up to
    ``max_poll_interval`` while nothing changes. Progress (items done, failed and in flight,
    live batches, cost so far) goes to the task run's logs at the start, every
    ``progress_every`` seconds and at the end.

    Args:
        run_id: The run to wait for.
        config: A `BatchorConfig`, the name of a saved one, or ``None`` for the environment.
        timeout: Seconds to wait at most; then `batchor.WaitTimeout` fails this attempt
            (the run goes on; the task's retries wait again).
        poll_interval: First pause between steps, in seconds.
        max_poll_interval: Longest pause between steps, in seconds.
        progress_every: Seconds between two progress lines in the log.

    Returns:
        The run's final `batchor.RunSummary`.

    Raises:
        RunStateError: The run is paused with nothing in flight (resume it first); at its
            spending cap, the message says so and how to raise it (not retried).
    """
    logger = get_run_logger()
    with resolve_config(config).runner() as runner:
        return steps.wait(
            runner,
            run_id,
            timeout,
            on_progress=lambda progress: logger.info("%s", progress.describe()),
            progress_every=progress_every,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
        )


@task(
    name="batchor-collect",
    task_run_name="collect-{run_id}",
    cache_key_fn=collect_cache_key,
    **_CACHED,
)
def collect_batch_run(
    run_id: str,
    destination: str | os.PathLike[str],
    config: BatchorConfig | str | None = None,
) -> steps.CollectResult:
    """Write a terminal run's results to ``destination`` (a path or URI ending in ``.jsonl``,
    ``.csv`` or ``.parquet``) with `batchor.steps.collect`, and return the small handle
    describing them: run id, URI, counts, tokens, cost.

    Cached on the run, the store and the destination; the persisted result is that handle.

    A run that has not ended is brought up to date first; if it still has not ended,
    `batchor.RunNotReady` fails this attempt and the task's retries collect again later.

    Raises:
        RunNotReady: The run has not ended yet (retried).
        RunStateError: The run is paused with nothing in flight (not retried).
    """
    logger = get_run_logger()
    with resolve_config(config).runner() as runner:
        result = steps.collect(runner, run_id, os.fspath(destination))
    logger.info(
        "run %s: %d results written to %s (%s)", run_id, result.results, result.uri, result.counts
    )
    return result


def run_summary(run_id: str, config: BatchorConfig | str | None = None) -> RunSummary:
    """The run's current summary, from the store alone (no provider call, no key needed).

    Raises:
        RunNotFoundError: The store has no such run.
    """
    with resolve_config(config).runner() as runner:
        return runner.get_run(run_id).summary()


def run_exists(run_id: str, config: BatchorConfig | str | None = None) -> bool:
    """Whether the store ``config`` points at holds the run ``run_id`` (a store read only)."""
    with resolve_config(config).runner() as runner:
        try:
            runner.get_run(run_id)
        except RunNotFoundError:
            return False
    return True
