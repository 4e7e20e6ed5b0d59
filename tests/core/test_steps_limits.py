"""The orchestrators' shared layer for time and money limits (`batchor.steps`): a task's
``deadline`` / ``max_cost_usd`` replace the job's own in the forms templates and JSON
parameters carry, bad values are permanent one-line errors, and `limit_stop` tells a run
stalled at its spending cap or hit by its deadline (what every integration reports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    OpenAIProviderConfig,
    RunStateError,
    is_permanent,
    steps,
)
from batchor.testing import OpenAIBatchEmulator

from .conftest import make_items, prompt


def _job(n: int = 6, **limits: object) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", request_params={"max_completion_tokens": 50}
        ),
        limits=BatchLimits(max_requests=2),
        **limits,  # type: ignore[arg-type]
    )


@pytest.fixture
def emulator() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator(phase_seconds=0) as emu:
        yield emu


@pytest.fixture
def runner(emulator: OpenAIBatchEmulator, tmp_path: Path) -> Iterator[BatchRunner]:
    with BatchRunner(
        f"sqlite:///{tmp_path}/store/batchor.db",
        tmp_path / "artifacts",
        api_key=emulator.api_key,
        base_url=emulator.base_url,
    ) as r:
        yield r


def test_a_tasks_limits_replace_the_jobs_own_in_every_form_a_task_carries() -> None:
    job = _job(deadline=timedelta(hours=1), max_cost_usd=5.0)
    assert steps.with_limits(job) is job  # nothing given: the job's own stay
    six_hours = steps.with_limits(job, deadline=timedelta(hours=6), max_cost_usd=2)
    assert (six_hours.deadline, six_hours.max_cost_usd) == (timedelta(hours=6), 2.0)
    assert six_hours.items is job.items
    assert job.deadline == timedelta(hours=1)
    # As a template or a deployment's JSON parameter renders them: seconds, ISO 8601, "12.5".
    rendered = steps.with_limits(job, deadline="3600", max_cost_usd=" 12.5 ")
    assert (rendered.deadline, rendered.max_cost_usd) == (timedelta(hours=1), 12.5)
    at = steps.with_limits(job, deadline="2026-11-23 06:00:00+00:00").deadline
    assert at == datetime(2026, 11, 23, 6, tzinfo=UTC)
    assert steps.with_limits(job, deadline=90.0).deadline == timedelta(seconds=90)
    # build_job applies them to what a factory (or an import path) builds.
    built = steps.build_job(lambda n: _job(n), {"n": 3}, max_cost_usd="0.5")
    assert (built.max_cost_usd, built.deadline) == (0.5, None)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"deadline": "2026-11-23T06:00:00"}, "deadline must be timezone-aware"),
        ({"deadline": "tomorrow"}, "deadline must be a timedelta, an aware datetime, a number"),
        ({"deadline": -5}, "deadline must be a positive timedelta or an aware datetime"),
        ({"deadline": ""}, "deadline must be a timedelta"),
        ({"deadline": "nan"}, "deadline must be a finite number of seconds"),
        ({"max_cost_usd": "ten"}, "max_cost_usd must be a number of USD, got 'ten'"),
        ({"max_cost_usd": 0}, "max_cost_usd must be more than 0, got 0"),
        ({"max_cost_usd": "inf"}, "max_cost_usd must be a number of USD"),
    ],
)
def test_bad_limits_are_permanent_one_line_errors_before_the_factory_runs(
    limits: dict[str, object], message: str
) -> None:
    calls: list[int] = []

    def factory() -> BatchJob:
        calls.append(1)
        return _job()

    with pytest.raises(ConfigurationError) as info:
        steps.build_job(factory, **limits)  # type: ignore[arg-type]
    assert str(info.value).startswith(message), info.value
    assert "\n" not in str(info.value)
    assert is_permanent(info.value)
    assert calls == []


def test_a_run_stalled_at_its_cap_is_a_budget_stop_that_wait_and_collect_name(
    runner: BatchRunner, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    started = steps.start(runner, _job(max_cost_usd=0.000001), "capped")
    assert emulator.stats.batches_created == 0  # not even the first batch fits
    stop = steps.limit_stop(started.summary)
    assert stop is not None
    assert stop.kind == "budget"
    assert (stop.pause_code, stop.max_cost_usd, stop.cost_usd) == ("budget", 0.000001, 0.0)
    assert stop.reason.startswith("run 'capped' stopped at its spending cap of $0.000001")
    assert "batchor resume capped --max-cost-usd" in stop.reason
    assert "\n" not in stop.reason
    assert json.loads(json.dumps(stop.to_dict()))["kind"] == "budget"

    with pytest.raises(RunStateError) as waited:
        steps.wait(runner, "capped", poll_interval=0.05, max_poll_interval=0.25)
    assert str(waited.value) == stop.reason
    assert is_permanent(waited.value)
    with pytest.raises(RunStateError, match="stopped at its spending cap") as collected:
        steps.collect(runner, "capped", tmp_path / "never.jsonl")
    assert str(collected.value).startswith(stop.reason)
    assert not (tmp_path / "never.jsonl").exists()

    # Raised, the run goes on and ends: no stop any more.
    runner.get_run("capped").resume(max_cost_usd=10)
    summary = steps.wait(runner, "capped", poll_interval=0.05, max_poll_interval=0.25)
    assert summary.completed == 6
    assert steps.limit_stop(summary) is None


def test_a_run_its_deadline_failed_is_a_deadline_stop_and_is_collected(
    runner: BatchRunner, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    steps.start(runner, steps.with_limits(_job(), deadline=past), "late")
    summary = steps.wait(runner, "late", poll_interval=0.05, max_poll_interval=0.25)
    assert emulator.stats.batches_created == 0
    stop = steps.limit_stop(summary)
    assert stop is not None
    assert (stop.kind, stop.deadline_failed, stop.items, stop.pause_code) == (
        "deadline",
        6,
        6,
        None,
    )
    assert stop.deadline_at == pytest.approx(past.timestamp())
    when = past.isoformat(timespec="seconds")
    assert stop.reason == (
        f"run 'late' passed its deadline {when}: 6 of 6 items failed with error class 'deadline'"
    )
    result = steps.collect(runner, "late", tmp_path / "late.jsonl")
    assert result.counts["failed"] == 6
    rows = [json.loads(line) for line in Path(result.uri).read_text().splitlines()]
    assert {r["error"]["class"] for r in rows} == {"deadline"}


def test_a_run_within_its_limits_is_no_stop(runner: BatchRunner) -> None:
    steps.start(runner, _job(deadline=timedelta(hours=1), max_cost_usd=10.0), "fine")
    summary = steps.wait(runner, "fine", poll_interval=0.05, max_poll_interval=0.25)
    assert summary.completed == 6
    assert steps.limit_stop(summary) is None
