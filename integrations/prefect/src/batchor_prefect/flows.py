"""`run_batch_job`: the ready flow composing start, wait and collect, and the flow class that
keeps job objects and credentials out of the parameters Prefect stores."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Self

from prefect import Flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.utilities.annotations import quote

from batchor import RunStateError, steps
from batchor.steps import JobSpec, describe_job
from batchor_prefect.config import BatchorConfig
from batchor_prefect.keys import flow_run_key
from batchor_prefect.summary import publish_summary
from batchor_prefect.tasks import (
    collect_batch_run,
    run_exists,
    run_summary,
    start_batch_run,
    wait_for_batch_run,
)


class BatchJobFlow(Flow[..., Any]):
    """A Prefect flow whose stored parameters never hold a job object or a config block.

    Prefect stores every flow run's parameters in its database and shows them in the UI. A
    `batchor.BatchJob` holds code, the input and possibly an API key, and a `BatchorConfig`
    holds the key: before storing, ``job`` becomes a short description (an import path stays
    as it is) and ``config`` the saved block's name or the secret-free `BatchorConfig.describe`.
    """

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters as Prefect stores them, with ``job`` and ``config`` made safe."""
        safe = dict(parameters)
        if "job" in safe:
            safe["job"] = describe_job(safe["job"])
        config = safe.get("config")
        if isinstance(config, BatchorConfig):
            name = getattr(config, "_block_document_name", None)
            safe["config"] = name if name and not config._is_anonymous else config.describe()
        elif config is not None and not isinstance(config, str):
            safe["config"] = f"<{type(config).__name__}>"
        return super().serialize_parameters(safe)

    def with_options(self, *args: Any, **kwargs: Any) -> Self:
        """`prefect.Flow.with_options`, keeping this class (and its parameter handling)."""
        new = super().with_options(*args, **kwargs)
        new.__class__ = type(self)
        return new  # type: ignore[return-value]


def _batch_job_flow(fn: Callable[..., Any]) -> BatchJobFlow:
    """Make ``fn`` a `BatchJobFlow`. Its parameters are checked by the tasks, not by pydantic,
    which cannot validate a `batchor.BatchJob`."""
    return BatchJobFlow(
        fn=fn,
        name="batchor-run-batch-job",
        description="Run a batchor job through its provider's batch API, exactly once, and "
        "export its results.",
        validate_parameters=False,
    )


@_batch_job_flow
def run_batch_job(
    job: JobSpec,
    destination: str | os.PathLike[str],
    run_key: str | None = None,
    config: BatchorConfig | str | None = None,
    deadline: steps.DeadlineSpec | None = None,
    max_cost_usd: float | str | None = None,
) -> steps.CollectResult | State[Any]:
    """The ready flow: run a batchor job to the end and export its results.

    Starts (or attaches to) the run, waits for it with progress in the logs, writes its
    results to ``destination`` and publishes a summary table artifact. Re-running it with the
    same run key reuses the run: nothing is submitted or written twice. A cached start whose
    run the store no longer has (the store was reset) is started again.

    Args:
        job: A `batchor.BatchJob`, a callable returning one, or the ``"module:name"`` import
            path of either (the form to use in a deployment's parameters).
        destination: Where to write the results: a path or URI ending in ``.jsonl``,
            ``.csv`` or ``.parquet``.
        run_key: The run id; by default derived from the flow run (`flow_run_key`). Pass a
            business key (``"reviews-2026-11-23"``) to reuse a run across flow runs.
        config: A `BatchorConfig`, the name of a saved one, or ``None`` for the environment.
        deadline: When the run must end, over the job's own (see `start_batch_run`).
        max_cost_usd: The run's spending cap in USD, over the job's own.

    Returns:
        The collect handle: run id, results URI, counts, tokens and cost. When the run's
        limits stopped it (`batchor.steps.limit_stop`), a ``Failed`` state whose message
        is the reason instead: paused at its spending cap with nothing in flight (nothing
        collected: raise the cap with ``batchor resume RUN --max-cost-usd N``, then run the
        flow again with the same run key), or items failed by its deadline (the results
        are written and the summary published first; the state's data is the handle).
    """
    key = run_key or flow_run_key()
    job_in_memory: Any = quote(job)  # the task gets the job; Prefect does not walk it
    started = start_batch_run(job_in_memory, key, config, deadline, max_cost_usd, return_state=True)
    handle = started.result()
    if started.name == "Cached" and not run_exists(handle.run_id, config):
        # The cache outlived the run (the store was reset): start it again, and re-cache.
        get_run_logger().warning(
            "the cached start of run %s names a run its store no longer has: starting it again",
            handle.run_id,
        )
        handle = start_batch_run.with_options(refresh_cache=True)(
            job_in_memory, key, config, deadline, max_cost_usd
        )
    try:
        summary = wait_for_batch_run(handle.run_id, config)
    except RunStateError:
        stop = steps.limit_stop(run_summary(handle.run_id, config))
        if stop is None:
            raise
        return Failed(message=stop.reason)
    result = collect_batch_run(handle.run_id, os.fspath(destination), config)
    publish_summary(result)
    if (stop := steps.limit_stop(summary)) is not None:
        return Failed(message=f"{stop.reason}; results written to {result.uri}", data=result)
    return result
