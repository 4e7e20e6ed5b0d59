"""What both asset factories share: their settings (`Spec`) and the steps an asset takes on
a batchor run through `batchor.steps`: start it (or reuse the partition's last run) with the
asset's deadline and spending cap, wait for it while logging its progress, collect its
results, and report what its limits did (`batchor.steps.limit_stop`)."""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    PartitionsDefinition,
    RetryPolicy,
    asset,
)

from batchor import (
    BatchJob,
    BatchRunner,
    ConfigurationError,
    JobMismatchError,
    RunStateError,
    RunSummary,
    StartedRun,
    steps,
)
from batchor.jobspec import cost_cap_from, deadline_from
from batchor.pacing import wait_arguments
from batchor.providers.registry import DEFAULT_PROVIDER

from .errors import dagster_failures
from .identity import RunKeyFn, partition_of, record_start, resolve_run_id
from .metadata import (
    FAILURE_RATE_CHECK,
    LIMITS_CHECK,
    failure_rate_check,
    limit_metadata,
    limits_check,
    limits_evaluation,
    result_metadata,
)
from .resource import BatchorResource

JobFn = Callable[..., BatchJob]
"""Builds the run's `batchor.BatchJob`: called as ``job(context, **inputs)`` with the asset's
execution context and its upstream inputs (the ``ins``)."""

KINDS = frozenset({"batchor"})
"""The kinds every batchor asset shows; ``kinds=`` adds to them (e.g. ``{"anthropic"}``)."""

FIELDS = frozenset({"partition_key", "run_id", "asset"})
"""Placeholders a destination template may use."""

MISMATCH_HINT = (
    "If an earlier materialisation of this partition left this run unfinished and it cannot "
    "take this job, cancel the old run (`batchor cancel RUN_ID --remote`) so the next "
    "materialisation starts a new one, or pass run_key"
)


@dataclass(frozen=True, slots=True)
class Spec:
    """The settings `batchor_asset` and `batchor_sensor_assets` share (the arguments of the
    same names; ``timeout`` is ``wait_timeout`` or ``collect_timeout``). Refuses, when
    built, a destination template with an unknown placeholder (see `FIELDS`), one that
    uses ``{partition_key}`` on an unpartitioned asset, or an invalid ``deadline`` or
    ``max_cost_usd``."""

    name: str
    job: JobFn
    destination: str
    partitions_def: PartitionsDefinition[str] | None = None
    deps: Iterable[Any] | None = None
    ins: Mapping[str, AssetIn] | None = None
    run_key: RunKeyFn | None = None
    key_prefix: str | Sequence[str] | None = None
    group_name: str | None = None
    max_failure_rate: float = 0.0
    check_severity: AssetCheckSeverity = AssetCheckSeverity.WARN
    poll_interval: float = 30.0
    progress_interval: float = 60.0
    retry_policy: RetryPolicy | None = None
    resource_key: str = "batchor"
    timeout: float | None = None
    deadline: steps.DeadlineSpec | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        wait_arguments(self.timeout, self.poll_interval, self.poll_interval, self.progress_interval)
        deadline_from(self.deadline)
        cost_cap_from(self.max_cost_usd)
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.destination) if f}
        except ValueError as exc:
            raise ConfigurationError(
                f"destination {self.destination!r} is not a valid template: {exc}"
            ) from exc
        if names - FIELDS:
            raise ConfigurationError(
                f"destination {self.destination!r} uses unknown placeholder(s) "
                f"{sorted(names - FIELDS)}; allowed: {sorted(FIELDS)}"
            )
        if "partition_key" in names and self.partitions_def is None:
            raise ConfigurationError(
                f"destination {self.destination!r} uses {{partition_key}} but the asset is not "
                "partitioned"
            )

    def key(self, suffix: str = "") -> AssetKey:
        """The key of the asset ``<name><suffix>`` under ``key_prefix``."""
        prefix = self.key_prefix
        return AssetKey(
            [*([prefix] if isinstance(prefix, str) else prefix or []), self.name + suffix]
        )

    def asset(
        self, key: AssetKey, description: str, *, checked: bool = False, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], AssetsDefinition]:
        """``@asset`` for one of the factory's assets (``checked``: with the failure-rate
        and limits checks); ``kwargs`` go to ``@asset`` (their ``kinds`` add to `KINDS`)."""
        kinds = set(KINDS) | set(kwargs.pop("kinds", None) or ())
        checks = [
            AssetCheckSpec(FAILURE_RATE_CHECK, asset=key),
            AssetCheckSpec(
                LIMITS_CHECK,
                asset=key,
                description="The run ended within its deadline and spending cap.",
            ),
        ]
        return asset(  # type: ignore[no-any-return]
            key=key,
            partitions_def=self.partitions_def,
            group_name=self.group_name,
            description=description,
            required_resource_keys={self.resource_key},
            check_specs=checks if checked else None,
            kinds=kinds,
            retry_policy=self.retry_policy,
            **kwargs,
        )

    def runner(self, context: Any) -> BatchRunner:
        """A runner from the context's `BatchorResource` (close it)."""
        resource: BatchorResource = getattr(context.resources, self.resource_key)
        return resource.runner()

    def start(
        self, context: AssetExecutionContext, runner: BatchRunner, job: BatchJob, rerun: bool
    ) -> tuple[StartedRun, bool]:
        """``(run, reused)``: choose the run (`resolve_run_id`), record it, then start it or
        attach to it with the asset's ``deadline`` and ``max_cost_usd`` over the job's own
        (`batchor.steps.with_limits`); ``reused`` when it is the run the partition's last
        materialisation drove.

        A finished run offered for reuse is attached to with `batchor.steps.start`, which
        submits nothing when the run's job is the same and raises `JobMismatchError` when the
        model, schema, prompts or source content changed: then a new run is started.
        Permanent errors (`batchor.errors.is_permanent`) fail without retry.
        """
        with dagster_failures():
            job = steps.with_limits(job, deadline=self.deadline, max_cost_usd=self.max_cost_usd)
        run_id, reusable = resolve_run_id(context, runner, self.run_key, rerun)
        with dagster_failures(MISMATCH_HINT):
            if reusable is not None:
                record_start(context, reusable)
                try:
                    started = steps.start(runner, job, reusable)
                except JobMismatchError as exc:
                    context.log.info(f"batchor run {reusable} is not reused: {exc}; starting anew")
                else:
                    context.log.info(
                        f"batchor run {reusable}: reused, the job is unchanged since the last "
                        "materialisation (nothing submitted; run config rerun: true buys anew)"
                    )
                    return started, True
            record_start(context, run_id)
            context.log.info(f"batchor run {run_id}: starting or resuming")
            return steps.start(runner, job, run_id), False

    def finish(
        self,
        context: AssetExecutionContext,
        runner: BatchRunner,
        run_id: str,
        reused: bool = False,
    ) -> MaterializeResult[Any]:
        """Wait for the run (`batchor.steps.wait`, logging its progress at least every
        ``progress_interval`` seconds), write its results to the rendered destination and
        describe them (``reused``: the run is one an earlier materialisation drove).

        The ``batchor_limits`` check fails when the run's deadline failed items (the
        results are written and the asset materialises), or when the run is paused at its
        spending cap with nothing in flight: then the step fails without retry, after
        logging the failed check.

        Raises:
            Failure: The run is paused with nothing in flight (no retry), or ``timeout``
                passed (retryable: the run goes on and the next attempt attaches to it).
        """
        destination = self.destination.format(
            partition_key=partition_of(context) or "",
            run_id=run_id,
            asset=context.asset_key.to_user_string(),
        )
        with dagster_failures("Then materialise again"):
            summary = self._wait(context, runner, run_id)
            result = steps.collect(runner, run_id, destination)
            record = runner.store.get_run(run_id)
        stored = record.config if record is not None else {}
        model, provider = stored.get("model"), stored.get("provider") or DEFAULT_PROVIDER
        context.log.info(
            f"batchor run {run_id}: {result.results} results written to {result.uri} "
            f"({result.run_status})"
        )
        check = failure_rate_check(result, self.max_failure_rate, self.check_severity)
        limits = limits_check(summary)
        if not limits.passed:
            context.log.warning(f"batchor {limits.description}")
        metadata = {**result_metadata(result, model, reused, provider), **limit_metadata(summary)}
        return MaterializeResult(metadata=metadata, check_results=[check, limits])

    def _wait(self, context: AssetExecutionContext, runner: BatchRunner, run_id: str) -> RunSummary:
        """`batchor.steps.wait`; a run stalled at its spending cap logs the failed limits
        check and fails without retry (``Failure`` with the reason and the figures)."""
        try:
            return steps.wait(
                runner,
                run_id,
                self.timeout,
                on_progress=lambda progress: context.log.info(progress.describe()),
                progress_every=self.progress_interval,
                poll_interval=min(1.0, self.poll_interval),
                max_poll_interval=self.poll_interval,
            )
        except RunStateError as exc:
            summary = runner.get_run(run_id).summary()
            stop = steps.limit_stop(summary)
            if stop is None:
                raise
            evaluation = limits_evaluation(context.asset_key, stop, summary)
            context.log_event(evaluation)
            raise Failure(
                description=f"{stop.reason}. Then materialise again",
                metadata=dict(evaluation.metadata),
                allow_retries=False,
            ) from exc
