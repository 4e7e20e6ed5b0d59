"""The run's deadline and spending cap on a batchor asset: the factory takes them over the
job's own (checked at definition time); a run stalled at its cap fails the step without
retry with a failed ``batchor_limits`` check (pause code, cost, cap), and materialising
again after the cap is raised finishes the run; a run its deadline failed materialises with
every result, ``batchor/deadline_failed`` and a failed ``batchor_limits`` check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from batchor_dagster import LIMITS_CHECK, BatchorResource, batchor_asset
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    RetryPolicy,
    materialize,
)

from batchor import BatchJob, BatchLimits, ConfigurationError, OpenAIProviderConfig
from batchor.testing import OpenAIBatchEmulator

from .conftest import Label, items_for, prompt
from .test_assets import _metadata
from .test_behaviour import _event_types

DAY = "2026-11-23"


def capped_job(context: AssetExecutionContext) -> BatchJob:
    """Six items on a priced model, two a batch, with a generous cap of its own."""
    return BatchJob(
        items=items_for(DAY, 6),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", request_params={"max_completion_tokens": 50}
        ),
        structured_output=Label,
        limits=BatchLimits(max_requests=2),
        max_cost_usd=100.0,
    )


def labels(tmp_path: Path, **limits: Any) -> Any:
    return batchor_asset(
        name="labels",
        job=capped_job,
        destination=str(tmp_path / "labels.jsonl"),
        run_key=lambda context: "labels-day",
        retry_policy=RetryPolicy(max_retries=2),
        poll_interval=0.05,
        **limits,
    )


def test_a_run_stalled_at_its_cap_fails_the_step_and_the_limits_check(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    capped = labels(tmp_path, max_cost_usd=0.000001)  # over the job's own $100
    outcome = materialize(
        [capped], resources={"batchor": resource}, instance=instance, raise_on_error=False
    )
    assert not outcome.success
    assert emulator.stats.batches_created == 0
    [failure] = outcome.get_step_failure_events()
    description = str(failure.step_failure_data.user_failure_data.description)
    assert description.startswith("run 'labels-day' stopped at its spending cap of $0.000001")
    assert "batchor resume labels-day --max-cost-usd" in description
    types = _event_types(instance, outcome.run_id)
    assert DagsterEventType.STEP_UP_FOR_RETRY not in types
    assert DagsterEventType.ASSET_MATERIALIZATION not in types
    # The failed check is in the event log (a failed step's result lists no evaluation).
    [check] = [
        e.dagster_event.event_specific_data
        for e in instance.all_logs(outcome.run_id)
        if e.dagster_event is not None
        and e.dagster_event.event_type is DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert isinstance(check, AssetCheckEvaluation)
    assert check.check_name == LIMITS_CHECK
    assert not check.passed
    assert check.severity is AssetCheckSeverity.ERROR
    assert check.description == description.removesuffix(". Then materialise again")
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["limit"] == "budget"
    assert meta["pause_code"] == "budget"
    assert meta["max_cost_usd"] == 0.000001
    assert meta["cost_usd"] == 0.0
    assert not (tmp_path / "labels.jsonl").exists()

    # Raise the cap as the reason says, then materialise again: the same run finishes.
    with resource.runner() as runner:
        runner.get_run("labels-day").resume(max_cost_usd=5)
    again = materialize([capped], resources={"batchor": resource}, instance=instance)
    assert again.success
    meta = _metadata(instance, again.run_id)
    assert meta["batchor/run_id"] == "labels-day"
    assert meta["batchor/completed"] == 6
    assert meta["batchor/max_cost_usd"] == 5.0
    checks = {c.check_name: c.passed for c in again.get_asset_check_evaluations()}
    assert checks == {"batchor_failure_rate": True, LIMITS_CHECK: True}
    assert emulator.stats.batches_created == 3


def test_a_run_its_deadline_failed_materialises_with_a_failed_limits_check(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    outcome = materialize(
        [labels(tmp_path, deadline=past)],
        resources={"batchor": resource},
        instance=instance,
    )
    assert outcome.success  # every result is written: the asset materialises
    assert emulator.stats.batches_created == 0
    meta = _metadata(instance, outcome.run_id)
    assert meta["batchor/run_status"] == "completed_with_failures"
    assert meta["batchor/deadline_failed"] == 6
    assert meta["batchor/failed"] == 6
    assert meta["batchor/deadline"] == past.isoformat(timespec="seconds")
    checks = {c.check_name: c for c in outcome.get_asset_check_evaluations()}
    limits = checks[LIMITS_CHECK]
    assert not limits.passed
    assert limits.severity is AssetCheckSeverity.ERROR
    assert limits.description == (
        f"run 'labels-day' passed its deadline {past.isoformat(timespec='seconds')}: 6 of 6 "
        "items failed with error class 'deadline'"
    )
    assert limits.metadata["deadline_failed"].value == 6
    assert limits.metadata["limit"].value == "deadline"
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(f"{DAY}-{i}" for i in range(6))
    assert {r["error"]["class"] for r in rows} == {"deadline"}


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_cost_usd": -1.0}, "max_cost_usd must be more than 0, got -1.0"),
        ({"deadline": datetime(2026, 11, 23)}, "deadline must be timezone-aware"),
    ],
)
def test_invalid_limits_are_refused_when_the_asset_is_defined(
    limits: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        labels(tmp_path, **limits)
