"""The layer every orchestrator integration shares (`batchor.steps`): "not yet" and "never"
are told apart by one rule, a collect brings the run up to date before it decides, the wait
reports progress, and job specs are loaded by one importer with one-line errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchRunner,
    ConfigurationError,
    JobMismatchError,
    OpenAIProviderConfig,
    ProviderError,
    ProviderQuotaError,
    RunNotReady,
    RunStateError,
    WaitTimeout,
    is_permanent,
    steps,
)
from batchor.progress import Progress
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import make_items, prompt


def _job(emu: OpenAIBatchEmulator, n: int = 12) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs rehydrated by id take the key from the environment, as in a fresh process.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator")


def test_one_rule_tells_not_yet_from_never() -> None:
    assert not is_permanent(RunNotReady("run r is running"))
    assert not is_permanent(WaitTimeout("still running", summary=None))  # type: ignore[arg-type]
    assert not is_permanent(ProviderError("HTTP 500"))
    assert not is_permanent(ConnectionError("reset"))
    assert is_permanent(RunStateError("run r is paused with nothing in flight"))
    assert is_permanent(JobMismatchError("run r exists with another job"))
    assert is_permanent(ConfigurationError("bad setting"))
    assert is_permanent(ProviderQuotaError("insufficient_quota"))
    assert issubclass(WaitTimeout, RunNotReady)
    assert issubclass(WaitTimeout, TimeoutError)


def test_a_collect_after_the_provider_finished_needs_no_poll(
    runner: BatchRunner, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator() as emu:
        started = steps.start(runner, _job(emu), "collect-late")
        assert started.summary.total == 12
        assert started.summary.in_flight == 1
        assert started.handle.to_dict()["run_id"] == started.run_id == "collect-late"
        deadline = time.monotonic() + 30
        while any(b["status"] != "completed" for b in emu.batches()):
            assert time.monotonic() < deadline, emu.batches()
            time.sleep(0.05)
        # Nobody polled: the store still says the batch is at the provider. A collect
        # reconciles once before it decides, so it succeeds.
        assert not runner.get_run("collect-late").summary().is_terminal
        result = steps.collect(runner, "collect-late", tmp_path / "late.jsonl")
    assert result.results == 12
    assert result.counts["completed"] == 12
    assert len((tmp_path / "late.jsonl").read_text().splitlines()) == 12


def test_a_collect_of_a_paused_run_with_nothing_in_flight_is_never(
    runner: BatchRunner, tmp_path: Path
) -> None:
    faults = EmulatorFaults(create_insufficient_quota_count=1)
    with OpenAIBatchEmulator(faults=faults) as emu:
        steps.start(runner, _job(emu, 3), "out-of-quota")
        summary = runner.get_run("out-of-quota").summary()
        assert summary.is_stalled, summary
        with pytest.raises(RunStateError, match="resume") as never:
            steps.collect(runner, "out-of-quota", tmp_path / "never.jsonl")
    assert is_permanent(never.value)
    assert not (tmp_path / "never.jsonl").exists()


def test_wait_reports_progress_at_its_interval_and_at_the_end(runner: BatchRunner) -> None:
    reports: list[Progress] = []
    with OpenAIBatchEmulator(phase_seconds=0.3) as emu:
        handle = steps.start(runner, _job(emu, 20), "progress")
        summary = steps.wait(runner, handle.run_id, on_progress=reports.append, progress_every=3600)
        assert summary.completed == 20
        # First step and the final one only: the interval is an hour.
        assert len(reports) == 2
        assert reports[0].in_flight > 0
        assert reports[-1].status == "completed"
        assert reports[-1].completed == 20
        assert reports[-1].in_flight == 0
        assert reports[-1].batches_live == 0
        line = reports[-1].describe()
        assert line.startswith("run progress completed: 20/20 done (0 failed), 0 in flight")
        assert "$" in line

        every: list[Progress] = []
        handle = steps.start(runner, _job(emu, 5), "progress-every")
        steps.wait(runner, handle.run_id, on_progress=every.append, progress_every=0)
        assert len(every) >= 3
        assert [p.completed for p in every] == sorted(p.completed for p in every)


def test_wait_times_out_with_a_retryable_error(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(phase_seconds=30) as emu:
        handle = steps.start(runner, _job(emu, 2), "slow")
        with pytest.raises(WaitTimeout) as timed_out:
            steps.wait(runner, handle.run_id, timeout=0.5)
    assert not is_permanent(timed_out.value)
    assert timed_out.value.summary.total == 2


def _factory(n: int = 2) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
    )


def _not_a_job() -> str:
    return "nope"


def _broken() -> BatchJob:
    raise KeyError("missing setting")


def test_job_specs_load_by_one_importer_with_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = __name__
    assert steps.build_job(f"{here}:_factory", {"n": 3}).provider_config.model == "gpt-4.1-mini"
    assert isinstance(steps.build_job(_factory), BatchJob)
    job = _factory()
    assert steps.build_job(job) is job
    assert steps.load_object(f"{here}:_factory") is _factory

    cases = {
        "no-colon": "job path 'no-colon' must look like 'package.module:name'",
        "no_such_module_xyz:job": "cannot import 'no_such_module_xyz'",
        f"{here}:missing": "no attribute 'missing'",
        f"{here}:_not_a_job": "returned str, not a BatchJob",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigurationError) as bad:
            steps.build_job(spec)
        assert message in str(bad.value), (spec, bad.value)
        assert "\n" not in str(bad.value)
    # A factory's own error is not turned into a configuration error: the retry rule sees it.
    with pytest.raises(KeyError, match="missing setting"):
        steps.build_job(f"{here}:_broken")
    with pytest.raises(ConfigurationError, match="takes no arguments"):
        steps.build_job(job, {"n": 1})

    # A module that raises while importing is a configuration error naming the path.
    (tmp_path / "exploding_jobs.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"exploding_jobs.*boom at import"):
        steps.load_object("exploding_jobs:job")
    sys.modules.pop("exploding_jobs", None)
