"""`batchor_sensor_assets`: the non-blocking mode. A submit asset starts the run and returns;
a sensor polls the runs in flight, each tick within a time budget; when a run has ended it
requests the collect asset's materialisation with ``run_key`` = the batchor run id."""

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    PartitionsDefinition,
    RetryPolicy,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    sensor,
)

from batchor import ProviderError, RunNotFoundError, RunStatus, steps

from . import driving
from .assets import KINDS, JobFn, asset_key
from .destination import check_template
from .identity import RUN_ID_KEY, RunKeyFn, partition_of
from .metadata import FAILURE_RATE_CHECK, submission_metadata
from .resource import BatchorAssetConfig, BatchorResource

_PAGE = 500  # submissions read from the event log per tick


@dataclass(frozen=True, slots=True)
class BatchorSensorAssets:
    """The three definitions of the non-blocking mode.

    Attributes:
        submit: The asset that starts (or attaches to) the run and returns at once.
        collect: The asset that writes a finished run's results; the sensor requests it.
        sensor: The sensor polling the runs in flight.
    """

    submit: AssetsDefinition
    collect: AssetsDefinition
    sensor: SensorDefinition

    @property
    def assets(self) -> list[AssetsDefinition]:
        """``[submit, collect]``, for ``Definitions(assets=...)``."""
        return [self.submit, self.collect]


def batchor_sensor_assets(
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
    max_failure_rate: float = 0.0,
    check_severity: AssetCheckSeverity = AssetCheckSeverity.WARN,
    minimum_interval_seconds: int = 60,
    tick_budget_seconds: float = 30.0,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    poll_interval: float = 30.0,
    collect_timeout: float | None = None,
    progress_interval: float = 60.0,
    retry_policy: RetryPolicy | None = None,
    resource_key: str = "batchor",
) -> BatchorSensorAssets:
    """A submit asset ``<name>_submission``, a collect asset ``<name>`` and a sensor
    ``<name>_sensor``, for batches that take hours: no worker waits on the provider.

    The submit asset starts the run (or attaches to an unfinished one, or reuses the
    partition's last run when the job is unchanged, as `batchor_asset` does) and
    materialises with the run id. Every ``minimum_interval_seconds`` the sensor
    reads new submissions from the event log, polls the runs in flight (one reconcile step
    each, stopping after ``tick_budget_seconds`` so a tick stays well under Dagster's 60 s)
    and, for each run that has ended, requests the collect asset's materialisation for the
    run's partition with ``run_key`` = the run id (Dagster never launches a run key twice).
    The collect asset writes the results and reports what `batchor_asset` reports. Launched
    by hand, it collects the partition's latest submission, waiting for it if needed.

    Arguments as for `batchor_asset`, plus:

    Args:
        minimum_interval_seconds: The sensor's interval.
        tick_budget_seconds: Stop polling within a tick after this long; the runs left are
            polled first at the next tick.
        default_status: Whether the sensor starts running when the code location loads.
        collect_timeout: How long the collect asset waits for a run not yet ended.
        progress_interval: How often the collect asset logs the progress of a run it waits
            for, in seconds.
    """
    check_template(destination, partitioned=partitions_def is not None)
    submit_key = asset_key(f"{name}_submission", key_prefix)
    collect_key = asset_key(name, key_prefix)
    collect_settings = driving.CollectSettings(destination, max_failure_rate, check_severity)
    wait_settings = driving.WaitSettings(poll_interval, collect_timeout, progress_interval)

    @asset(
        key=submit_key,
        ins=ins,
        deps=deps,
        partitions_def=partitions_def,
        group_name=group_name,
        description=f"Submits the batch run of {collect_key.to_user_string()}; returns at once.",
        required_resource_keys={resource_key},
        kinds=set(KINDS),
        retry_policy=retry_policy,
    )
    def _submit(
        context: AssetExecutionContext, config: BatchorAssetConfig, **inputs: Any
    ) -> MaterializeResult:  # type: ignore[type-arg]
        resource: BatchorResource = getattr(context.resources, resource_key)
        batch_job = job(context, **inputs)
        with resource.runner() as runner:
            run = driving.start(context, runner, batch_job, run_key, config.rerun)
            summary = runner.get_run(run.run_id).summary()
        context.log.info(f"batchor run {run.run_id}: submitted; the sensor collects it when done")
        model = batch_job.provider_config.model
        return MaterializeResult(metadata=submission_metadata(summary, model, run.reused))

    @asset(
        key=collect_key,
        deps=[submit_key],
        partitions_def=partitions_def,
        group_name=group_name,
        description=f"Results of the batch run submitted by {submit_key.to_user_string()}.",
        required_resource_keys={resource_key},
        check_specs=[AssetCheckSpec(FAILURE_RATE_CHECK, asset=collect_key)],
        kinds=set(KINDS),
        retry_policy=retry_policy,
    )
    def _collect(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]
        resource: BatchorResource = getattr(context.resources, resource_key)
        run_id = context.run.tags.get(RUN_ID_KEY) or _submitted_run_id(
            context.instance, submit_key, partition_of(context)
        )
        with resource.runner() as runner:
            driving.wait(context, runner, run_id, wait_settings)
            model = driving.run_model(runner, run_id)
            return driving.collect(context, runner, run_id, model, collect_settings)

    @sensor(
        name=f"{'__'.join(collect_key.path)}_sensor",
        target=[collect_key],
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={resource_key},
        default_status=default_status,
        description=f"Polls the batch runs of {collect_key.to_user_string()} in flight and "
        "requests their collection when they end.",
    )
    def _poll(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        resource: BatchorResource = getattr(context.resources, resource_key)
        cursor = _Cursor.loads(context.cursor)
        cursor.read_submissions(context.instance, submit_key)
        requests = cursor.poll(context, resource, tick_budget_seconds)
        if not requests:
            context.update_cursor(cursor.dumps())
            return SkipReason(f"{len(cursor.pending)} batch run(s) in flight, none ended")
        return SensorResult(run_requests=requests, cursor=cursor.dumps())

    return BatchorSensorAssets(submit=_submit, collect=_collect, sensor=_poll)


def _submitted_run_id(
    instance: DagsterInstance, submit_key: AssetKey, partition_key: str | None
) -> str:
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=submit_key,
            asset_partitions=[partition_key] if partition_key is not None else None,
        ),
        limit=1,
    ).records
    mat = records[0].asset_materialization if records else None
    if mat is None or RUN_ID_KEY not in mat.metadata:
        raise Failure(
            description=f"no batch run submitted for this partition: materialise "
            f"{submit_key.to_user_string()} first",
            allow_retries=False,
        )
    return str(mat.metadata[RUN_ID_KEY].value)


class _Cursor:
    """The sensor's state: the last submission read and the runs in flight, by partition."""

    def __init__(self, after: int | None, pending: dict[str, str | None]) -> None:
        self.after = after
        self.pending = pending

    @classmethod
    def loads(cls, raw: str | None) -> "_Cursor":
        data = json.loads(raw) if raw else {}
        return cls(data.get("after"), dict(data.get("pending", {})))

    def dumps(self) -> str:
        return json.dumps({"after": self.after, "pending": self.pending}, sort_keys=True)

    def read_submissions(self, instance: DagsterInstance, submit_key: AssetKey) -> None:
        """Add the runs of submissions materialised since the last tick."""
        while True:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=submit_key, after_storage_id=self.after),
                limit=_PAGE,
                ascending=True,
            ).records
            for record in records:
                self.after = record.storage_id
                mat = record.asset_materialization
                if mat is not None and RUN_ID_KEY in mat.metadata:
                    self.pending[str(mat.metadata[RUN_ID_KEY].value)] = mat.partition
            if len(records) < _PAGE:
                return

    def poll(
        self, context: SensorEvaluationContext, resource: BatchorResource, budget: float
    ) -> list[RunRequest]:
        """One reconcile step per run in flight, until ``budget`` seconds have passed; a
        request for each run that has ended. Runs polled move to the back of the queue."""
        deadline = time.monotonic() + budget
        requests: list[RunRequest] = []
        with resource.runner() as runner:
            for run_id, partition_key in list(self.pending.items()):
                if time.monotonic() >= deadline:
                    break
                del self.pending[run_id]
                try:
                    summary = steps.poll(runner, run_id)
                except RunNotFoundError:
                    context.log.warning(f"batchor run {run_id} is not in the store; dropped")
                    continue
                except ProviderError as exc:  # transient: try again at the next tick
                    context.log.warning(f"batchor run {run_id}: poll failed ({exc}); will retry")
                    self.pending[run_id] = partition_key
                    continue
                if summary.is_terminal:
                    requests.append(
                        RunRequest(
                            run_key=run_id,
                            partition_key=partition_key,
                            tags={RUN_ID_KEY: run_id},
                        )
                    )
                    continue
                if summary.status is RunStatus.PAUSED:
                    context.log.warning(
                        f"batchor run {run_id} is paused ({summary.pause_reason}); "
                        f"resume it with `batchor resume {run_id}`"
                    )
                self.pending[run_id] = partition_key
        return requests
