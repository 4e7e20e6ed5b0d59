"""What a materialisation reports to Dagster: run id, counts by status, token usage under
``<provider>.<model>.*`` keys (``openai.<model>.*`` for OpenAI runs, as Dagster's OpenAI
integration names them), estimated cost, the results URI, the failure-rate check, and the
limits check with the run's deadline and spending cap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
)

from batchor import CollectResult, RunSummary
from batchor.providers.registry import DEFAULT_PROVIDER
from batchor.steps import LimitStop, limit_stop

FAILURE_RATE_CHECK = "batchor_failure_rate"
"""Name of the asset check on the share of items that failed."""

LIMITS_CHECK = "batchor_limits"
"""Name of the asset check that fails when the run's limits stopped it: paused at its
spending cap (``budget``) or with items failed by its deadline (``deadline``)."""

LIMITS_SEVERITY = AssetCheckSeverity.ERROR
"""The limits check's severity when it fails."""

REUSED_RUN_KEY = "batchor/reused_run_id"
"""Metadata key naming the run a materialisation reused instead of buying a new one."""


def result_metadata(
    result: CollectResult, model: str | None, reused: bool = False, provider: str = DEFAULT_PROVIDER
) -> dict[str, Any]:
    """Metadata of a collected run's materialisation; token usage under the
    ``<provider>.<model>.*`` keys of the run's provider: for OpenAI runs the
    ``openai.<model>.*`` keys Dagster's OpenAI integration and Insights use, for others
    (``anthropic.<model>.*``, ...) keys that never count their tokens as OpenAI's."""
    counts, prompt, completion = result.counts, result.input_tokens, result.output_tokens
    metadata: dict[str, Any] = {
        **_run(result.run_id, result.run_status, counts, reused),
        "batchor/completed": MetadataValue.int(counts.get("completed", 0)),
        "batchor/failed": MetadataValue.int(counts.get("failed", 0)),
        "batchor/cancelled": MetadataValue.int(counts.get("cancelled", 0)),
        "dagster/row_count": MetadataValue.int(result.results),
        "batchor/results_uri": _location(result.uri),
    }
    if result.cost_usd is not None:
        metadata["batchor/cost_usd"] = MetadataValue.float(round(result.cost_usd, 6))
    if model:
        usage = {"prompt": prompt, "completion": completion, "total": prompt + completion}
        metadata.update(
            {f"{provider}.{model}.{k}_tokens": MetadataValue.int(n) for k, n in usage.items()}
        )
    return metadata


def submission_metadata(
    summary: RunSummary, model: str | None, reused: bool = False
) -> dict[str, Any]:
    """Metadata of a submission (the run may be in flight)."""
    items = {s.value: n for s, n in summary.items.items()}
    metadata = _run(summary.run_id, summary.status.value, items, reused)
    metadata["batchor/batches"] = MetadataValue.json(dict(summary.batches))
    if model:
        metadata["batchor/model"] = MetadataValue.text(model)
    return metadata


def failure_rate_check(
    result: CollectResult, max_failure_rate: float, severity: AssetCheckSeverity
) -> AssetCheckResult:
    """Passes when at most ``max_failure_rate`` of the run's items ended ``failed``."""
    total = sum(result.counts.values())
    failed = result.counts.get("failed", 0)
    rate = failed / total if total else 0.0
    return AssetCheckResult(
        check_name=FAILURE_RATE_CHECK,
        passed=rate <= max_failure_rate,
        severity=severity,
        metadata={
            "failure_rate": MetadataValue.float(round(rate, 6)),
            "max_failure_rate": MetadataValue.float(max_failure_rate),
            "failed": MetadataValue.int(failed),
            "items": MetadataValue.int(total),
        },
    )


def limit_metadata(summary: RunSummary) -> dict[str, Any]:
    """The run's limits and what they did, for a run that has any (else empty):
    ``batchor/deadline`` and ``batchor/deadline_failed``, ``batchor/max_cost_usd`` and
    ``batchor/pause_code``."""
    metadata: dict[str, Any] = {}
    if summary.deadline_at is not None:
        when = datetime.fromtimestamp(summary.deadline_at, UTC).isoformat(timespec="seconds")
        metadata["batchor/deadline"] = MetadataValue.text(when)
    if summary.deadline_at is not None or summary.deadline_failed:
        metadata["batchor/deadline_failed"] = MetadataValue.int(summary.deadline_failed)
    if summary.max_cost_usd is not None:
        metadata["batchor/max_cost_usd"] = MetadataValue.float(summary.max_cost_usd)
    if summary.pause_code is not None:
        metadata["batchor/pause_code"] = MetadataValue.text(summary.pause_code)
    return metadata


def limits_check(summary: RunSummary) -> AssetCheckResult:
    """Passes unless the run's limits stopped it (`batchor.steps.limit_stop`); when they
    did, its description is the reason and its metadata says which limit and the figures."""
    stop = limit_stop(summary)
    return AssetCheckResult(
        check_name=LIMITS_CHECK,
        passed=stop is None,
        severity=LIMITS_SEVERITY,
        description=None if stop is None else stop.reason,
        metadata=_stop_metadata(stop, summary),
    )


def limits_evaluation(
    asset_key: AssetKey, stop: LimitStop, summary: RunSummary
) -> AssetCheckEvaluation:
    """The failed limits check of an asset whose step fails on ``stop`` (the run stalled at
    its cap), to log before raising: a failed step reports no check result of its own."""
    return AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=LIMITS_CHECK,
        passed=False,
        severity=LIMITS_SEVERITY,
        description=stop.reason,
        metadata=_stop_metadata(stop, summary),
    )


def _stop_metadata(stop: LimitStop | None, summary: RunSummary) -> dict[str, Any]:
    metadata = {
        key.removeprefix("batchor/"): value for key, value in limit_metadata(summary).items()
    }
    if summary.cost_usd is not None:
        metadata["cost_usd"] = MetadataValue.float(round(summary.cost_usd, 6))
    if stop is not None:
        metadata["limit"] = MetadataValue.text(stop.kind)
        metadata["reason"] = MetadataValue.text(stop.reason)
    return metadata


def _run(run_id: str, status: str, items: dict[str, int], reused: bool) -> dict[str, Any]:
    reuse = {REUSED_RUN_KEY: MetadataValue.text(run_id)} if reused else {}
    return {
        "batchor/run_id": MetadataValue.text(run_id),
        **reuse,
        "batchor/run_status": MetadataValue.text(status),
        "batchor/items": MetadataValue.json(dict(items)),
    }


def _location(uri: str) -> Any:
    return MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri)
