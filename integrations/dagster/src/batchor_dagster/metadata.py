"""What a materialisation reports to Dagster: run id, counts by status, token usage under
``<provider>.<model>.*`` keys (``openai.<model>.*`` for OpenAI runs, as Dagster's OpenAI
integration names them), estimated cost, the results URI, and the failure-rate check."""

from __future__ import annotations

from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from batchor import CollectResult, RunSummary
from batchor.providers.registry import DEFAULT_PROVIDER

FAILURE_RATE_CHECK = "batchor_failure_rate"
"""Name of the asset check on the share of items that failed."""

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
