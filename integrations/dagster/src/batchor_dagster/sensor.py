"""`batchor_sensor_assets`: the non-blocking mode. A submit asset starts the run and returns;
a sensor polls the runs in flight, each tick within a time budget; when a run has ended it
requests the collect asset's materialisation with ``run_key`` = the batchor run id."""

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict, Unpack

from dagster import (
    AssetCheckSeverity,
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
    sensor,
)

from batchor import BatchRunner, ProviderError, RunNotFoundError, RunStatus, steps

from .driving import JobFn, Spec
from .identity import RUN_ID_KEY, RunKeyFn, last_materialised, partition_of
from .metadata import submission_metadata
from .resource import BatchorAssetConfig

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


class BatchorAssetOptions(TypedDict, total=False):
    """The keyword arguments `batchor_sensor_assets` takes as `batchor_asset` does (same
    meanings and defaults)."""

    partitions_def: PartitionsDefinition[str] | None
    deps: Iterable[Any] | None
    ins: Mapping[str, AssetIn] | None
    run_key: RunKeyFn | None
    key_prefix: str | Sequence[str] | None
    group_name: str | None
    max_failure_rate: float
    check_severity: AssetCheckSeverity
    poll_interval: float
    progress_interval: float
    retry_policy: RetryPolicy | None
    resource_key: str
    deadline: steps.DeadlineSpec | None
    max_cost_usd: float | None


def batchor_sensor_assets(
    *,
    name: str,
    job: JobFn,
    destination: str,
    minimum_interval_seconds: int = 60,
    tick_budget_seconds: float = 30.0,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    collect_timeout: float | None = None,
    **options: Unpack[BatchorAssetOptions],
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
        collect_timeout: How long the collect asset waits for a run not yet ended (it logs
            the run's progress as `batchor_asset` does).
    """
    spec = Spec(name=name, job=job, destination=destination, timeout=collect_timeout, **options)
    submit_key, collect_key = spec.key("_submission"), spec.key()

    @spec.asset(
        submit_key,
        f"Submits the batch run of {collect_key.to_user_string()}; returns at once.",
        ins=spec.ins,
        deps=spec.deps,
    )
    def _submit(
        context: AssetExecutionContext, config: BatchorAssetConfig, **inputs: Any
    ) -> MaterializeResult:  # type: ignore[type-arg]
        batch_job = job(context, **inputs)
        with spec.runner(context) as runner:
            run, reused = spec.start(context, runner, batch_job, config.rerun)
        context.log.info(f"batchor run {run.run_id}: submitted; the sensor collects it when done")
        model = batch_job.provider_config.model
        return MaterializeResult(metadata=submission_metadata(run.summary, model, reused))

    @spec.asset(
        collect_key,
        f"Results of the batch run submitted by {submit_key.to_user_string()}.",
        checked=True,
        deps=[submit_key],
    )
    def _collect(context: AssetExecutionContext) -> MaterializeResult:  # type: ignore[type-arg]
        run_id = context.run.tags.get(RUN_ID_KEY)
        if run_id is None:
            _, run_id = last_materialised(context.instance, submit_key, partition_of(context))
        if run_id is None:
            raise Failure(
                description=f"no batch run submitted for this partition: materialise "
                f"{submit_key.to_user_string()} first",
                allow_retries=False,
            )
        with spec.runner(context) as runner:
            return spec.finish(context, runner, run_id)

    @sensor(
        name=f"{'__'.join(collect_key.path)}_sensor",
        target=[collect_key],
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={spec.resource_key},
        default_status=default_status,
        description=f"Polls the batch runs of {collect_key.to_user_string()} in flight and "
        "requests their collection when they end.",
    )
    def _poll(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        cursor = _Cursor.loads(context.cursor)
        cursor.read_submissions(context.instance, submit_key)
        with spec.runner(context) as runner:
            requests = cursor.poll(context, runner, tick_budget_seconds)
        if not requests:
            context.update_cursor(cursor.dumps())
            return SkipReason(f"{len(cursor.pending)} batch run(s) in flight, none ended")
        return SensorResult(run_requests=requests, cursor=cursor.dumps())

    return BatchorSensorAssets(submit=_submit, collect=_collect, sensor=_poll)


@dataclass
class _Cursor:
    """The sensor's state: the last submission read and the runs in flight, by partition."""

    after: int | None = None
    pending: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def loads(cls, raw: str | None) -> "_Cursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

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
        self, context: SensorEvaluationContext, runner: BatchRunner, budget: float
    ) -> list[RunRequest]:
        """One reconcile step per run in flight, until ``budget`` seconds have passed; a
        request for each run that has ended. Runs polled move to the back of the queue."""
        deadline = time.monotonic() + budget
        requests: list[RunRequest] = []
        for run_id, partition_key in list(self.pending.items()):
            if time.monotonic() >= deadline:
                break
            del self.pending[run_id]
            try:
                summary = steps.poll(runner, run_id)
            except RunNotFoundError:
                context.log.warning(f"batchor run {run_id} is not in the store; dropped")
                continue
            except ProviderError as exc:  # try again at the next tick
                context.log.warning(f"batchor run {run_id}: poll failed ({exc}); will retry")
                self.pending[run_id] = partition_key
                continue
            if summary.is_terminal:
                tags = {RUN_ID_KEY: run_id}
                requests.append(RunRequest(run_key=run_id, partition_key=partition_key, tags=tags))
                continue
            if (stop := steps.limit_stop(summary)) is not None:
                context.log.warning(f"batchor {stop.reason}")
            elif summary.status is RunStatus.PAUSED:
                context.log.warning(
                    f"batchor run {run_id} is paused ({summary.pause_reason}); "
                    f"resume it with `batchor resume {run_id}`"
                )
            self.pending[run_id] = partition_key
        return requests
