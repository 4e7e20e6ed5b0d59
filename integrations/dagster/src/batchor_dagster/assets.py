"""`batchor_asset`: an asset whose materialisation starts or resumes a batchor run, waits for
it, and writes its results to a path or object-store URL."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    PartitionsDefinition,
    RetryPolicy,
    asset,
)

from batchor import BatchJob

from . import driving
from .destination import check_template
from .identity import RunKeyFn
from .metadata import FAILURE_RATE_CHECK
from .resource import BatchorAssetConfig, BatchorResource

JobFn = Callable[..., BatchJob]
"""Builds the run's `batchor.BatchJob`: called as ``job(context, **inputs)`` with the asset's
execution context and its upstream inputs (the ``ins``)."""

KINDS = frozenset({"openai", "batchor"})


def asset_key(name: str, key_prefix: str | Sequence[str] | None) -> AssetKey:
    """The key of an asset named ``name`` under ``key_prefix``."""
    prefix = [key_prefix] if isinstance(key_prefix, str) else list(key_prefix or [])
    return AssetKey([*prefix, name])


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
    **asset_kwargs: Any,
) -> AssetsDefinition:
    """An asset whose materialisation runs a batch job to the end.

    The materialisation starts the batchor run, or attaches to it (nothing is submitted
    twice), waits for it, writes its results to ``destination`` and returns a
    `MaterializeResult` with the run id, counts by status, token usage
    (``openai.<model>.prompt_tokens`` / ``completion_tokens`` / ``total_tokens``), the
    estimated cost and the results' location, plus the ``batchor_failure_rate`` check.

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
        progress_interval: Log the run's progress at least this often while waiting, in
            seconds (each change is logged too).
        retry_policy: Dagster retries for transient errors (permanent ones never retry).
        resource_key: The key of the `BatchorResource`.
        **asset_kwargs: Passed to ``@asset`` (``owners``, ``tags``, ``metadata``, ...).
    """
    check_template(destination, partitioned=partitions_def is not None)
    key = asset_key(name, key_prefix)
    wait_settings = driving.WaitSettings(poll_interval, wait_timeout, progress_interval)
    collect_settings = driving.CollectSettings(destination, max_failure_rate, check_severity)

    @asset(  # type: ignore[untyped-decorator]
        key=key,
        ins=ins,
        deps=deps,
        partitions_def=partitions_def,
        group_name=group_name,
        description=description or f"Batch job run through the OpenAI Batch API ({name}).",
        required_resource_keys={resource_key},
        check_specs=[AssetCheckSpec(FAILURE_RATE_CHECK, asset=key)],
        kinds=set(KINDS),
        retry_policy=retry_policy,
        **asset_kwargs,
    )
    def _batch(
        context: AssetExecutionContext, config: BatchorAssetConfig, **inputs: Any
    ) -> MaterializeResult:  # type: ignore[type-arg]
        resource: BatchorResource = getattr(context.resources, resource_key)
        batch_job = job(context, **inputs)
        with resource.runner() as runner:
            run = driving.start(context, runner, batch_job, run_key, config.rerun)
            driving.wait(context, runner, run.run_id, wait_settings)
            model = batch_job.provider_config.model
            return driving.collect(context, runner, run.run_id, model, collect_settings, run.reused)

    definition: AssetsDefinition = _batch
    return definition
