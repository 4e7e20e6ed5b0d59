"""`batchor_asset`: an asset whose materialisation starts or resumes a batchor run, waits for
it, and writes its results to a path or object-store URL."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MaterializeResult,
    PartitionsDefinition,
    RetryPolicy,
)

from batchor.steps import DeadlineSpec

from .driving import JobFn, Spec
from .identity import RunKeyFn
from .resource import BatchorAssetConfig

__all__ = ["JobFn", "batchor_asset"]


def batchor_asset(
    *,
    name: str,
    job: JobFn,
    destination: str,
    partitions_def: PartitionsDefinition[str] | None = None,
    deps: Iterable[Any] | None = None,
    ins: Mapping[str, AssetIn] | None = None,
    run_key: RunKeyFn | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    max_failure_rate: float = 0.0,
    check_severity: AssetCheckSeverity = AssetCheckSeverity.WARN,
    poll_interval: float = 30.0,
    wait_timeout: float | None = None,
    progress_interval: float = 60.0,
    retry_policy: RetryPolicy | None = None,
    resource_key: str = "batchor",
    deadline: DeadlineSpec | None = None,
    max_cost_usd: float | None = None,
    **asset_kwargs: Any,
) -> AssetsDefinition:
    """An asset whose materialisation runs a batch job to the end.

    The materialisation starts the batchor run, or attaches to it (nothing is submitted
    twice), waits for it, writes its results to ``destination`` and returns a
    `MaterializeResult` with the run id, counts by status, token usage
    (``openai.<model>.prompt_tokens`` / ``completion_tokens`` / ``total_tokens``), the
    estimated cost and the results' location, plus the ``batchor_failure_rate`` check and
    the ``batchor_limits`` check (see ``deadline`` and ``max_cost_usd``).

    Which run: ``run_key(context)`` when given; else the run an unfinished earlier attempt on
    the same partition started (a crash, a failure, a timeout), unless it was cancelled;
    else the run the partition's last materialisation drove, reused if its job (model,
    schema, prompts, source content) is unchanged and the run config does not say
    ``rerun: true`` (the metadata then has ``batchor/reused_run_id``); else a new id from
    the asset key, partition key and Dagster root run id.

    Args:
        name: The asset's name.
        job: ``job(context, **inputs) -> BatchJob``; the provider settings need no key or
            base URL (they come from the `BatchorResource`).
        destination: Path or fsspec URL of the results (``.jsonl``, ``.csv``,
            ``.parquet``); may use ``{partition_key}``, ``{run_id}`` and ``{asset}``.
        partitions_def: Partitions; one run per partition.
        deps: Upstream assets this one depends on without loading them.
        ins: Upstream assets whose values are passed to ``job`` by name.
        run_key: A function of the context returning your own business key for the run.
        key_prefix: Prefix of the asset key.
        group_name: The asset group.
        description: The asset's description.
        max_failure_rate: The failure-rate check passes up to this share of failed items.
        check_severity: The check's severity when it fails.
        poll_interval: The longest pause between two polls while waiting, in seconds.
        wait_timeout: Fail (retryably) after waiting this long; the run goes on.
        progress_interval: Log the run's progress every this many seconds while waiting
            (also at the first poll and at the end).
        retry_policy: Dagster retries for transient errors (permanent ones, by
            `batchor.is_permanent`, never retry).
        resource_key: The key of the `BatchorResource`.
        deadline: When each run must end, over the job's own (`batchor.BatchJob.deadline`):
            a ``timedelta`` from the run's creation (the usual choice: per partition), an
            aware ``datetime``, or seconds. Items it fails make the ``batchor_limits``
            check fail (severity ERROR; the asset still materialises with every result),
            with ``batchor/deadline_failed`` in the metadata.
        max_cost_usd: Each run's spending cap in USD, over the job's own (the model must be
            priced). A run paused at its cap with nothing in flight fails the step without
            retry, logging a failed ``batchor_limits`` check with the pause code, the cost
            and the cap; raise the cap (``batchor resume RUN --max-cost-usd N``) and
            materialise again: the attempt attaches to the run.
        **asset_kwargs: Passed to ``@asset`` (``owners``, ``tags``, ``metadata``, ...);
            ``kinds`` add to ``{"batchor"}`` (e.g. ``kinds={"anthropic"}``).
    """
    given = locals()  # the arguments: the shared ones make the Spec
    shared = {f.name: given[f.name] for f in fields(Spec) if f.name in given}
    spec = Spec(**shared, timeout=wait_timeout)
    description = description or f"Batch job run through a provider's batch API ({name})."

    @spec.asset(spec.key(), description, checked=True, ins=ins, deps=deps, **asset_kwargs)
    def _batch(
        context: AssetExecutionContext, config: BatchorAssetConfig, **inputs: Any
    ) -> MaterializeResult:  # type: ignore[type-arg]
        with spec.runner(context) as runner:
            run, reused = spec.start(context, runner, job(context, **inputs), config.rerun)
            return spec.finish(context, runner, run.run_id, reused)

    return _batch
