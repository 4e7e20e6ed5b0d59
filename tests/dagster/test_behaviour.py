"""How batchor assets behave at the edges: the failure-rate check, permanent errors failing
without retry, credentials from EnvVar and the environment, object-store destinations, and
destination templates checked at definition time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import fsspec
import pytest
from batchor_dagster import BatchorResource, batchor_asset
from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    EnvVar,
    RetryPolicy,
    materialize,
)

from batchor import BatchJob, ConfigurationError, OpenAIProviderConfig
from batchor.testing import OpenAIBatchEmulator

from .conftest import DAYS, SECRET, Label, daily_labels, day_job, items_for, prompt
from .test_assets import _metadata


def _event_types(instance: DagsterInstance, run_id: str) -> list[DagsterEventType]:
    return [
        e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event is not None
    ]


def test_failure_rate_check_fails_when_items_fail(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    emulator.faults.line_fault = lambda _, body: (
        "bad_request" if str(body["input"]).startswith("review 3 ") else None
    )
    labels = daily_labels(str(tmp_path / "{partition_key}.csv"), max_failure_rate=0.05)
    outcome = materialize(
        [labels], partition_key="2026-11-23", resources={"batchor": resource}, instance=instance
    )
    assert outcome.success  # the check warns; the asset is materialised
    meta = _metadata(instance, outcome.run_id)
    assert meta["batchor/run_status"] == "completed_with_failures"
    assert meta["batchor/failed"] == 1
    assert meta["batchor/completed"] == 11
    checks = {c.check_name: c for c in outcome.get_asset_check_evaluations()}
    assert set(checks) == {"batchor_failure_rate", "batchor_limits"}
    assert checks["batchor_limits"].passed  # no deadline, no cap: nothing stopped the run
    check = checks["batchor_failure_rate"]
    assert not check.passed
    assert check.metadata["failure_rate"].value == pytest.approx(1 / 12, abs=1e-6)
    assert len((tmp_path / "2026-11-23.csv").read_text().splitlines()) == 13  # header + 12


def test_permanent_errors_fail_without_retry(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    def job_with(model: str) -> Any:
        def build(context: AssetExecutionContext) -> BatchJob:
            return BatchJob(
                items=items_for("2026-11-23", 4),
                build_prompt=prompt,
                provider_config=OpenAIProviderConfig(model=model),
                structured_output=Label,
            )

        return build

    def asset_for(model: str) -> Any:
        return batchor_asset(
            name="labels",
            job=job_with(model),
            destination=str(tmp_path / "labels.jsonl"),
            run_key=lambda context: "labels-business-key",
            retry_policy=RetryPolicy(max_retries=2),
            poll_interval=0.2,
        )

    first = materialize(
        [asset_for("gpt-4.1-mini")], resources={"batchor": resource}, instance=instance
    )
    assert _metadata(instance, first.run_id)["batchor/run_id"] == "labels-business-key"

    changed = materialize(
        [asset_for("gpt-4.1")],
        resources={"batchor": resource},
        instance=instance,
        raise_on_error=False,
    )
    assert not changed.success
    [failure] = changed.get_step_failure_events()
    assert "JobMismatchError" in str(failure.step_failure_data.user_failure_data.description)
    types = _event_types(instance, changed.run_id)
    assert DagsterEventType.STEP_UP_FOR_RETRY not in types
    assert emulator.stats.batches_created == 1

    wrong_key = "sk-wrong-key-0000"
    refused = materialize(
        [asset_for("gpt-4.1-mini")],
        resources={
            "batchor": BatchorResource(
                **{**resource.model_dump(), "openai_api_key": wrong_key, "store": None}
            )
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not refused.success
    [failure] = refused.get_step_failure_events()
    assert "ProviderAuthError" in str(failure.step_failure_data.user_failure_data.description)
    assert DagsterEventType.STEP_UP_FOR_RETRY not in _event_types(instance, refused.run_id)
    assert wrong_key not in "".join(str(e) for e in instance.all_logs(refused.run_id))


def test_credentials_from_envvar_and_environment_and_an_object_store_destination(
    emulator: OpenAIBatchEmulator,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_BATCH_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("BATCHOR_STORE", f"sqlite:///{tmp_path}/env-store.db")
    monkeypatch.setenv("BATCHOR_ARTIFACTS", str(tmp_path / "env-artifacts"))
    resource = BatchorResource(openai_api_key=EnvVar("MY_BATCH_KEY"))
    assert SECRET not in repr(BatchorResource(openai_api_key=SECRET))

    labels = daily_labels("memory://batchor-dagster-test/{asset}/{partition_key}.jsonl")
    outcome = materialize(
        [labels], partition_key="2026-11-24", resources={"batchor": resource}, instance=instance
    )
    assert outcome.success
    meta = _metadata(instance, outcome.run_id)
    uri = "memory://batchor-dagster-test/labels/2026-11-24.jsonl"
    assert meta["batchor/results_uri"] == uri
    with fsspec.open(uri, "rt") as results:
        assert len(results.read().splitlines()) == 12
    assert (tmp_path / "env-store.db").is_file()  # BATCHOR_STORE was used
    assert any((tmp_path / "env-artifacts").rglob("*.jsonl"))  # and BATCHOR_ARTIFACTS
    assert SECRET not in "".join(str(e) for e in instance.all_logs(outcome.run_id))


@pytest.mark.parametrize(
    ("destination", "partitioned", "message"),
    [
        ("out/{partition_key}.jsonl", False, "not partitioned"),
        ("out/{day}.jsonl", True, "unknown placeholder"),
        ("out/{partition_key.jsonl", True, "not a valid template"),
    ],
)
def test_destination_templates_are_checked_when_defined(
    destination: str, partitioned: bool, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        batchor_asset(
            name="labels",
            job=day_job,
            destination=destination,
            partitions_def=DAYS if partitioned else None,
        )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"poll_interval": 0}, "poll_interval must be a number of seconds, more than 0: 0"),
        ({"progress_interval": -1}, "progress_every must be a number of seconds, 0 or more"),
        ({"wait_timeout": float("nan")}, "timeout must be a number of seconds"),
    ],
)
def test_wait_settings_are_checked_when_defined(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        batchor_asset(name="labels", job=day_job, destination="out/l.jsonl", **setting)


def test_a_long_wait_logs_progress_while_nothing_changes(
    resource: BatchorResource, instance: DagsterInstance, tmp_path: Path
) -> None:
    # Each batch spends >= 0.6 s in each of three phases: ~1.8 s in which its state is unchanged.
    with OpenAIBatchEmulator(api_key=SECRET, phase_seconds=0.6) as slow:
        resource = BatchorResource(**{**resource.model_dump(), "openai_base_url": slow.base_url})
        labels = daily_labels(
            str(tmp_path / "{partition_key}.jsonl"), poll_interval=0.1, progress_interval=0.25
        )
        outcome = materialize(
            [labels], partition_key="2026-11-23", resources={"batchor": resource}, instance=instance
        )
    assert outcome.success
    lines = [
        (e.timestamp, e.user_message)
        for e in instance.all_logs(outcome.run_id)
        if e.dagster_event is None and " done (" in e.user_message
    ]
    quiet = [m for _, m in lines if "running" in m and "12 in flight" in m]
    assert len(quiet) >= 3, lines  # the same state, logged again and again while waiting
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(lines)]
    assert max(gaps) < 1.5, lines  # no long silence between "submitted" and "completed"
    assert (
        ": 0/12 done (0 failed), 12 in flight in 3 batches at the provider, 0 waiting, $"
        in quiet[0]
    )
    assert (
        "completed: 12/12 done (0 failed), 0 in flight in 0 batches at the provider, 0 waiting, $"
        in lines[-1][1]
    )


def _failing(
    resource: BatchorResource, instance: DagsterInstance, tmp_path: Path, **settings: Any
) -> tuple[str, list[DagsterEventType]]:
    """Materialise a partition that fails; its failure's description and the run's events."""
    labels = daily_labels(str(tmp_path / "{partition_key}.jsonl"), **settings)
    outcome = materialize(
        [labels],
        partition_key="2026-11-23",
        resources={"batchor": resource},
        instance=instance,
        raise_on_error=False,
    )
    assert not outcome.success
    [failure] = outcome.get_step_failure_events()
    description = str(failure.step_failure_data.user_failure_data.description)
    return description, _event_types(instance, outcome.run_id)


def test_a_run_paused_with_nothing_in_flight_fails_without_retry(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    emulator.faults.create_insufficient_quota_count = 100  # the run pauses: out of quota
    retry = RetryPolicy(max_retries=2)
    description, types = _failing(resource, instance, tmp_path, retry_policy=retry)
    assert "RunStateError" in description, description
    assert "batchor resume" in description, description
    assert DagsterEventType.STEP_UP_FOR_RETRY not in types
    assert emulator.stats.batches_created == 0


def test_a_wait_timeout_fails_retryably_and_the_retry_attaches_to_the_run(
    resource: BatchorResource, instance: DagsterInstance, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator(api_key=SECRET, phase_seconds=1.5) as slow:
        resource = BatchorResource(**{**resource.model_dump(), "openai_base_url": slow.base_url})
        retry = RetryPolicy(max_retries=1)
        description, types = _failing(
            resource, instance, tmp_path, retry_policy=retry, wait_timeout=0.5
        )
        assert "WaitTimeout" in description, description
        assert "attaches to it" in description, description
        assert types.count(DagsterEventType.STEP_UP_FOR_RETRY) == 1
        assert slow.stats.batches_created == 3  # the retry attached to the same run
