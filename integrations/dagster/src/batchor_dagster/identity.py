"""Which batchor run an asset partition's materialisation drives: a deterministic id from the
asset key, the partition key and the Dagster root run id, or the unfinished run an earlier
materialisation of the same partition left behind."""

from __future__ import annotations

from collections.abc import Callable

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    Failure,
)

from batchor import BatchRunner, RunStatus, run_id_from

RUN_ID_KEY = "batchor/run_id"
"""Metadata key (and run tag) carrying the batchor run id."""

RunKeyFn = Callable[[AssetExecutionContext], str]
"""A user function giving the run key (a business key) for a materialisation."""

_LOOKBACK = 20  # observations of the partition inspected to find the last batchor one


def partition_of(context: AssetExecutionContext) -> str | None:
    """The partition being materialised, or ``None`` for an unpartitioned asset.

    Raises:
        Failure: The run covers a range of partitions (a single-run backfill): a batchor
            asset runs one batch run per partition.
    """
    if context.has_partition_key:
        return str(context.partition_key)
    if context.has_partition_key_range:
        raise Failure(
            description="a batchor asset materialises one partition per run; launch the "
            "backfill with one run per partition (the default BackfillPolicy)",
            allow_retries=False,
        )
    return None


def derived_run_id(asset_key: AssetKey, partition_key: str | None, root_run_id: str) -> str:
    """The default run id: asset key, partition key (when partitioned) and the Dagster root
    run id, which re-execution of a failed run keeps."""
    parts = [asset_key.to_user_string()]
    if partition_key is not None:
        parts.append(partition_key)
    return run_id_from(*parts, root_run_id)


def last_run_ids(
    instance: DagsterInstance, asset_key: AssetKey, partition_key: str | None
) -> tuple[str | None, str | None]:
    """``(unfinished, materialised)``: the batchor run the last materialisation attempt of
    this asset partition started if no materialisation of the partition has succeeded with
    it (a crash, a failure, a timeout), and the run the partition's last materialisation
    drove.

    Every attempt records an `AssetObservation` carrying the run id *before* it submits
    anything, so even a crash in the middle of submission leaves the pointer behind.
    """
    records_filter = AssetRecordsFilter(
        asset_key=asset_key,
        asset_partitions=[partition_key] if partition_key is not None else None,
    )
    observations = instance.fetch_observations(records_filter, limit=_LOOKBACK).records
    started = next(
        (
            r
            for r in observations
            if r.asset_observation is not None and RUN_ID_KEY in r.asset_observation.metadata
        ),
        None,
    )
    latest = instance.fetch_materializations(records_filter, limit=1).records
    mat = latest[0].asset_materialization if latest else None
    materialised = (
        str(mat.metadata[RUN_ID_KEY].value) if mat and RUN_ID_KEY in mat.metadata else None
    )
    if started is None or started.asset_observation is None:
        return None, materialised
    attempted = str(started.asset_observation.metadata[RUN_ID_KEY].value)
    if (latest and latest[0].storage_id > started.storage_id) or attempted == materialised:
        return None, materialised
    return attempted, materialised


def resolve_run_id(
    context: AssetExecutionContext,
    runner: BatchRunner,
    run_key: RunKeyFn | None,
    rerun: bool = False,
) -> tuple[str, str | None]:
    """``(run_id, reusable)``: the run this materialisation drives unless it reuses
    ``reusable``, the run the partition's last materialisation drove.

    - With ``run_key``, the user's business key (made a valid id by `batchor.run_id_from`).
    - Else the run an unfinished earlier attempt on this partition started, unless that run
      was cancelled: re-materialising after a crash attaches to it instead of paying twice.
    - Else `derived_run_id` of the asset key, partition key and root run id; unless
      ``rerun``, the run the partition's last materialisation drove is ``reusable`` (unless
      cancelled or gone): the caller attaches to it instead if the job is unchanged.
    """
    if run_key is not None:
        return run_id_from(run_key(context)), None
    partition_key = partition_of(context)
    unfinished, materialised = last_run_ids(context.instance, context.asset_key, partition_key)
    # An unfinished run never created (or discarded unsubmitted) has no status: keep its id.
    if unfinished is not None and _status(runner, unfinished) is not RunStatus.CANCELLED:
        return unfinished, None
    root = context.run.root_run_id or context.run.run_id
    fresh = derived_run_id(context.asset_key, partition_key, root)
    if rerun or materialised in (None, fresh):
        return fresh, None
    if _status(runner, materialised) in (None, RunStatus.CANCELLED):
        return fresh, None
    return fresh, materialised


def record_start(context: AssetExecutionContext, run_id: str) -> None:
    """Log the `AssetObservation` that points later attempts of this partition at
    ``run_id``; done before anything is submitted."""
    context.log_event(
        AssetObservation(
            asset_key=context.asset_key,
            partition=partition_of(context),
            description=f"batchor run {run_id} started or resumed",
            metadata={RUN_ID_KEY: run_id, "batchor/dagster_run_id": context.run.run_id},
        )
    )


def _status(runner: BatchRunner, run_id: str) -> RunStatus | None:
    record = runner.store.get_run(run_id)
    return None if record is None else record.status
