"""The run's deadline and spending cap from Airflow: the operators take them (templated forms
too) over the job's own; a run stalled at its cap fails the task without retry naming the
cap and the resume command, and clearing the task after the cap is raised finishes the run;
a run its deadline failed fails the task without retry once its results file is written."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchor import BatchItem, BatchJob, BatchLimits, BatchRunner, OpenAIProviderConfig, PromptParts
from tests.airflow.helpers import jsonl_ids, store_runs

pytest.importorskip("airflow")


def capped_job(n: int = 6) -> BatchJob:
    """``n`` items on a priced model, two a batch, with a generous cap of its own."""
    return BatchJob(
        items=[BatchItem(item_id=f"i-{k}", payload={"text": f"item {k}"}) for k in range(n)],
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", request_params={"max_completion_tokens": 50}
        ),
        limits=BatchLimits(max_requests=2),
        max_cost_usd=100.0,
    )


def run_to_end(task: Any) -> dict[str, Any]:
    """Execute a run operator as Airflow would: after each deferral its trigger fires a
    ``poll`` event and the task resumes, until it returns."""
    from airflow.sdk.exceptions import TaskDeferred

    with contextlib.suppress(TaskDeferred):
        return dict(task.execute({}))
    for _ in range(100):
        time.sleep(0.05)
        with contextlib.suppress(TaskDeferred):
            return dict(task.execute_complete({}, {"run_id": task.run_id, "reason": "poll"}))
    raise AssertionError("the task never finished")


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "blocking"])
def test_a_run_stalled_at_its_cap_fails_the_task_without_retry_until_the_cap_is_raised(
    batchor_env: dict[str, str], emulator, tmp_path: Path, deferrable: bool
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from batchor_airflow import BatchorRunOperator

    destination = tmp_path / "capped.jsonl"
    task = BatchorRunOperator(
        task_id="classify",
        job=capped_job,
        run_id="capped",
        destination=str(destination),
        deferrable=deferrable,
        poll_interval=0.05,
        max_cost_usd="0.000001",  # as a template renders it; over the job's own $100
    )
    # At once, without deferring: nothing in flight, so no wait can end it.
    with pytest.raises(AirflowFailException) as info:
        task.execute({})
    message = str(info.value)
    assert message.startswith("RunStateError: run 'capped' stopped at its spending cap")
    assert "batchor resume capped --max-cost-usd" in message
    assert emulator.stats.batches_created == 0
    assert not destination.exists()

    # The remedy the message names, then the task cleared: it attaches and finishes.
    store, artifacts = batchor_env["BATCHOR_STORE"], batchor_env["BATCHOR_ARTIFACTS"]
    with BatchRunner(store, artifacts) as runner:
        runner.get_run("capped").resume(max_cost_usd=5)
    handle = run_to_end(task)
    assert handle["run_status"] == "completed"
    assert jsonl_ids(handle["uri"]) == sorted(f"i-{k}" for k in range(6))
    assert emulator.stats.batches_created == 3
    assert store_runs(batchor_env) == ["capped"]


def test_start_then_collect_fail_on_a_stalled_run_naming_its_cap(
    batchor_env: dict[str, str], emulator, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from batchor_airflow import BatchorCollectOperator, BatchorStartOperator

    started = BatchorStartOperator(
        task_id="start", job=capped_job, run_id="split", max_cost_usd=0.000001
    ).execute({})
    assert started["status"] == "paused"  # starting never waits: it succeeds
    collect = BatchorCollectOperator(
        task_id="collect", run_id="split", destination=str(tmp_path / "never.jsonl")
    )
    with pytest.raises(AirflowFailException, match=r"stopped at its spending cap of \$0\.000001"):
        collect.execute({})
    assert emulator.stats.batches_created == 0


def test_a_run_its_deadline_failed_fails_the_task_after_writing_its_results(
    batchor_env: dict[str, str], emulator, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from batchor_airflow import BatchorRunOperator

    past = datetime.now(UTC) - timedelta(seconds=1)
    destination = tmp_path / "late.jsonl"
    task = BatchorRunOperator(
        task_id="classify",
        job=capped_job,
        run_id="late",
        destination=str(destination),
        deferrable=False,
        poll_interval=0.05,
        deadline=past.isoformat(),  # as "{{ ... }}" renders a datetime
    )
    with pytest.raises(AirflowFailException) as info:
        task.execute({})
    when = past.isoformat(timespec="seconds")
    assert str(info.value) == (
        f"run 'late' passed its deadline {when}: 6 of 6 items failed with error class "
        f"'deadline'; results written to {destination}"
    )
    # Nothing answered is lost: the file holds every item, failed by the deadline.
    rows = [json.loads(line) for line in destination.read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(f"i-{k}" for k in range(6))
    assert {(r["status"], r["error"]["class"]) for r in rows} == {("failed", "deadline")}
    assert emulator.stats.batches_created == 0
    # A retry or a clear fails the same way, without writing the file again.
    written = destination.stat().st_mtime_ns
    with pytest.raises(AirflowFailException, match="passed its deadline"):
        task.execute({})
    assert destination.stat().st_mtime_ns == written


def test_invalid_limits_fail_the_task_without_retry_before_any_run(
    batchor_env: dict[str, str], emulator, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from batchor_airflow import BatchorRunOperator

    for limits, message in [
        ({"deadline": "tomorrow"}, "ConfigurationError: deadline must be a timedelta"),
        ({"deadline": "2026-11-23T06:00:00"}, "ConfigurationError: deadline must be timezone"),
        ({"max_cost_usd": "-3"}, "ConfigurationError: max_cost_usd must be more than 0"),
    ]:
        task = BatchorRunOperator(
            task_id="classify",
            job=capped_job,
            run_id="bad",
            destination=str(tmp_path / "bad.jsonl"),
            deferrable=False,
            **limits,
        )
        with pytest.raises(AirflowFailException, match=message):
            task.execute({})
    assert store_runs(batchor_env) == []
    assert emulator.stats.total_calls == 0


@pytest.mark.parametrize("poll_interval", [0, -5, float("inf")])
def test_a_bad_poll_interval_is_refused_when_the_dag_is_defined(poll_interval: float) -> None:
    from batchor_airflow import BatchorRunOperator, BatchorSensor

    from batchor import ConfigurationError

    for make in (
        lambda: BatchorRunOperator(
            task_id="classify", job=capped_job, destination="out.jsonl", poll_interval=poll_interval
        ),
        lambda: BatchorSensor(task_id="wait", run_id="r", poll_interval=poll_interval),
    ):
        with pytest.raises(ConfigurationError, match="poll_interval must be a number of seconds"):
            make()
