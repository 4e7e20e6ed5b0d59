"""Retries on a real Prefect server: a start task that crashes after the core submitted is
retried and attaches to the same run (one batch per batch key); permanent errors are not
retried."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from batchor_prefect import (
    BatchorConfig,
    collect_batch_run,
    retry_unless_permanent,
    start_batch_run,
    wait_for_batch_run,
)
from prefect import flow
from prefect.states import Failed
from prefect.utilities.annotations import quote

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    JobMismatchError,
    OpenAIProviderConfig,
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    Run,
    RunNotFoundError,
    RunNotReady,
    RunStateError,
    SourceError,
    WaitTimeout,
    steps,
)
from batchor.testing import OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt
from .helpers import flow_run_id, task_runs


class CrashAfterSubmit(BatchRunner):
    """A runner whose first `start` loses the worker right after the core has submitted."""

    crashes: ClassVar[list[str]] = []

    def start(self, job: BatchJob, run_id: str | None = None, **kwargs: Any) -> Run:
        run = super().start(job, run_id, **kwargs)
        if not CrashAfterSubmit.crashes:
            CrashAfterSubmit.crashes.append(run.run_id)
            raise ConnectionError("worker lost its connection after submitting")
        return run


class CrashOnceConfig(BatchorConfig):
    """The block, with the crashing runner."""

    _block_type_slug: ClassVar[str] = "batchor-config-crash-once-test"

    def runner(self) -> BatchRunner:
        key = self.openai_api_key.get_secret_value() if self.openai_api_key else None
        return CrashAfterSubmit(
            self.store, self.artifacts, api_key=key, base_url=self.openai_base_url
        )


def _job(emu: OpenAIBatchEmulator, model: str = "gpt-4.1-mini") -> BatchJob:
    return BatchJob(
        items=make_items(25),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(model=model, base_url=emu.base_url),
        structured_output=Sentiment,
        limits=BatchLimits(max_requests=10),  # three batches
    )


def _composed(job: BatchJob, destination: Path) -> Any:
    """A flow built from the tasks, with immediate retries."""

    @flow(name="composed-batchor-flow")
    def composed(run_key: str, config: BatchorConfig) -> steps.CollectResult:
        start = start_batch_run.with_options(retry_delay_seconds=0)
        handle = start(quote(job), run_key, config)
        wait_for_batch_run(handle.run_id, config, poll_interval=0.05)
        return collect_batch_run(handle.run_id, str(destination), config)

    return composed


def test_a_start_that_crashes_after_submitting_is_retried_into_the_same_run(
    tmp_path: Path,
) -> None:
    CrashAfterSubmit.crashes.clear()
    with OpenAIBatchEmulator(phase_seconds=0.2) as emu:
        config = CrashOnceConfig(
            store=f"sqlite:///{tmp_path}/store/batchor.db",
            artifacts=str(tmp_path / "artifacts"),
            openai_api_key=emu.api_key,
        )
        composed = _composed(_job(emu), tmp_path / "out.jsonl")
        state = composed("crash-after-submit", config, return_state=True)
        assert state.is_completed(), state
        assert CrashAfterSubmit.crashes == ["crash-after-submit"]
        states = task_runs(flow_run_id(state))
        assert states["start-crash-after-submit"] == ("Completed", 2)  # failed once, retried

        # One run; each of the three batches created exactly once.
        assert emu.stats.batches_created == 3
        per_key = emu.stats.batches_by_metadata("batchor_batch_key")
        assert len(per_key) == 3
        assert set(per_key.values()) == {1}
        with BatchRunner(config.store, config.artifacts) as runner:
            assert [r.run_id for r in runner.store.list_runs()] == ["crash-after-submit"]
        result = state.result()
        assert result.counts == {"completed": 25, "failed": 0, "cancelled": 0}
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 25


def test_a_run_key_taken_by_another_job_fails_without_retry(tmp_path: Path) -> None:
    with OpenAIBatchEmulator() as emu:
        config = BatchorConfig(
            store=f"sqlite:///{tmp_path}/store/batchor.db",
            artifacts=str(tmp_path / "artifacts"),
            openai_api_key=emu.api_key,
        )
        with config.runner() as runner:  # started elsewhere (the CLI, another flow)
            steps.start(runner, _job(emu), "taken")
        created = emu.stats.batches_created

        composed = _composed(_job(emu, model="gpt-4.1"), tmp_path / "out.jsonl")
        state = composed("taken", config, return_state=True)
        assert state.is_failed()
        with pytest.raises(JobMismatchError):
            state.result()
        assert task_runs(flow_run_id(state))["start-taken"] == ("Failed", 1)  # no retry
        assert emu.stats.batches_created == created


def test_a_collect_before_the_run_ends_is_retried_and_a_rerun_after_it_ended_succeeds(
    tmp_path: Path,
) -> None:
    destination = tmp_path / "out.jsonl"
    with OpenAIBatchEmulator(phase_seconds=0.4) as emu:
        config = BatchorConfig(
            store=f"sqlite:///{tmp_path}/store/batchor.db",
            artifacts=str(tmp_path / "artifacts"),
            openai_api_key=emu.api_key,
        )
        job = _job(emu)

        @flow(name="collect-too-early")
        def too_early(run_key: str, retries: int) -> steps.CollectResult:
            handle = start_batch_run(quote(job), run_key, config)
            collect = collect_batch_run.with_options(retries=retries, retry_delay_seconds=0.25)
            return collect(handle.run_id, str(destination), config)

        # No retries left: the collect fails for now, as "not yet", and writes nothing.
        state = too_early("early", 0, return_state=True)
        assert state.is_failed()
        with pytest.raises(RunNotReady):
            state.result()
        assert not destination.exists()
        assert retry_unless_permanent(None, None, state) is True  # type: ignore[arg-type]

        # Once the provider has finished, a rerun of the flow collects without any poll:
        # the collect brings the run up to date first.
        while any(b["status"] != "completed" for b in emu.batches()):
            time.sleep(0.1)
        state = too_early("early", 0, return_state=True)
        assert state.is_completed(), state
        assert state.result().counts == {"completed": 25, "failed": 0, "cancelled": 0}
        assert len(destination.read_text().splitlines()) == 25

        # With retries, a collect called right after the start simply waits its turn.
        destination.unlink()
        state = too_early("retried", 20, return_state=True)
        assert state.is_completed(), state
        assert task_runs(flow_run_id(state))["collect-retried"][1] > 1
        assert emu.stats.batches_created == 6


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ProviderError("502 from the provider"), True),
        (RunNotReady("run r is running"), True),
        (WaitTimeout("still running", summary=None), True),  # type: ignore[arg-type]
        (ConnectionError("reset by peer"), True),
        (OSError("disk busy"), True),
        (ConfigurationError("bad setting"), False),
        (SourceError("line 3 is not JSON"), False),
        (JobMismatchError("taken"), False),
        (RunNotFoundError("no run"), False),
        (RunStateError("paused"), False),
        (ProviderAuthError("401"), False),
        (ProviderQuotaError("insufficient_quota"), False),
    ],
)
def test_retry_condition_retries_transient_errors_only(error: Exception, retried: bool) -> None:
    state = Failed(data=error)
    assert retry_unless_permanent(start_batch_run, None, state) is retried  # type: ignore[arg-type]
