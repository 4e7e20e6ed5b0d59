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


def last_materialised(
    instance: DagsterInstance, asset_key: AssetKey, partition_key: str | None
) -> tuple[int, str | None]:
    """``(storage id, run id)`` of the asset partition's last materialisation: ``-1`` when
    there is none, no run id when it carries none."""
    records = instance.fetch_materializations(_of(asset_key, partition_key), limit=1).records
    mat = records[0].asset_materialization if records else None
    if mat is None:
        return -1, None
    run_id = mat.metadata.get(RUN_ID_KEY)
    return records[0].storage_id, None if run_id is None else str(run_id.value)


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
    observed = [
        (r.storage_id, str(obs.metadata[RUN_ID_KEY].value))
        for r in instance.fetch_observations(_of(asset_key, partition_key), limit=_LOOKBACK).records
        if (obs := r.asset_observation) is not None and RUN_ID_KEY in obs.metadata
    ]
    stored_at, materialised = last_materialised(instance, asset_key, partition_key)
    if not observed or stored_at > observed[0][0] or observed[0][1] == materialised:
        return None, materialised
    return observed[0][1], materialised


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


def _of(asset_key: AssetKey, partition_key: str | None) -> AssetRecordsFilter:
    partitions = None if partition_key is None else [partition_key]
    return AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions)
