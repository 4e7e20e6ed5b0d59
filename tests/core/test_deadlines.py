"""Deadlines and batch timeouts (issue #19) against the emulator through the real openai SDK
and a real SQLite file: a provider batch past its timeout is cancelled exactly once, its
answered lines kept and its unanswered items sent again, free, in exactly one new batch; past
the run's deadline nothing more is sent and every open item ends ``failed`` (``deadline``).
The same holds driven from a fresh process and by two worker processes at once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    OpenAIProviderConfig,
    Run,
    RunStatus,
    RunSummary,
)
from batchor.engine.poll import poll
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import make_items, prompt
from .contexts import emulator_transport, make_context
from .drivers import drive_in_processes

CANCEL = ("POST", "/v1/batches/{id}/cancel")
ITEMS, PER_BATCH = 30, 10
HELD_ANSWERED = PER_BATCH // 2  # the held batch answers half of its lines


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[BatchRunner]:
    with BatchRunner(f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts") as r:
        yield r


def _job(
    emu: OpenAIBatchEmulator,
    *,
    n: int = ITEMS,
    batch_timeout: float | None = None,
    deadline: float | None = None,
    token_limit: int | None = None,
) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini",
            base_url=emu.base_url,
            api_key=emu.api_key,
            enqueued_token_limit=token_limit,
        ),
        limits=BatchLimits(
            max_requests=PER_BATCH,
            batch_timeout=None if batch_timeout is None else timedelta(seconds=batch_timeout),
        ),
        deadline=None if deadline is None else timedelta(seconds=deadline),
    )


def _wait(run: Run) -> RunSummary:
    return run.wait(60, poll_interval=0.05, max_poll_interval=0.25)


def _billed(emu: OpenAIBatchEmulator) -> tuple[int, int]:
    """The tokens the provider billed over every batch (answered lines only)."""
    batches = emu.batches()
    return (
        sum(b["usage"]["input_tokens"] for b in batches),
        sum(b["usage"]["output_tokens"] for b in batches),
    )


# ---- batch timeout --------------------------------------------------------------------------


def _check_timed_out(emu: OpenAIBatchEmulator, runner: BatchRunner, summary: RunSummary) -> None:
    """One held batch was cancelled once; its unanswered half went out again in exactly one
    new batch; every item completed on its first attempt, each line bought once."""
    assert summary.status is RunStatus.COMPLETED
    assert emu.stats.calls[CANCEL] == 1
    batches = emu.batches()
    assert emu.stats.batches_created == ITEMS // PER_BATCH + 1
    assert Counter(b["status"] for b in batches) == {"completed": 3, "cancelled": 1}
    assert batches[-1]["request_counts"]["total"] == PER_BATCH - HELD_ANSWERED
    answered = emu.stats.lines_answered
    assert sum(answered.values()) == ITEMS
    assert set(answered.values()) == {1}
    results = list(runner.get_run(summary.run_id).results())
    assert [r.status for r in results] == [ItemStatus.COMPLETED] * ITEMS
    assert {r.attempts for r in results} == {1}  # the requeue charged nothing
    assert (summary.timed_out_batches, summary.timeout_requeued) == (1, PER_BATCH - HELD_ANSWERED)
    assert summary.deadline_failed == 0
    # The answered lines of the cancelled batch are billed and counted once.
    assert (summary.usage.input_tokens, summary.usage.output_tokens) == _billed(emu)
    assert summary.cost_usd is not None
    assert summary.cost_usd > 0


def test_a_batch_past_its_timeout_is_cancelled_and_its_rest_sent_once(
    runner: BatchRunner,
) -> None:
    faults = EmulatorFaults(hold_count=1)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        run = runner.start(_job(emu, batch_timeout=1.0), "timeout")
        summary = _wait(run)
        _check_timed_out(emu, runner, summary)
        held = emu.batches()[0]
        assert held["status"] == "cancelled"
        assert held["request_counts"]["completed"] == HELD_ANSWERED
        assert {b.status for b in run.batches()} == {"collected"}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["fresh-process", "two-workers"])
def test_a_timeout_is_handled_once_from_fresh_processes(
    store_url: str, tmp_path: Path, workers: int
) -> None:
    faults = EmulatorFaults(hold_count=1)
    with (
        OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu,
        BatchRunner(store_url, tmp_path / "artifacts") as runner,
    ):
        runner.start(_job(emu, batch_timeout=1.0), "timeout")  # created and submitted here
        assert emu.stats.calls[CANCEL] == 0
        finals = drive_in_processes(emu, store_url, tmp_path, "timeout", workers)
        assert {s["status"] for s in finals} == {"completed"}
        assert {s["timed_out_batches"] for s in finals} == {1}
        _check_timed_out(emu, runner, runner.get_run("timeout").summary())


def test_a_failed_cancel_is_sent_again_after_the_lease(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "0.3")
    faults = EmulatorFaults(hold_count=1)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        run = runner.start(_job(emu, n=PER_BATCH, batch_timeout=0.3), "retry")
        record = runner.store.get_run("retry")
        assert record is not None
        ctx = make_context(runner, record, emulator_transport(emu))  # SDK retries off
        time.sleep(0.35)
        faults.route_server_error_counts = {"POST /v1/batches/{id}/cancel": 1}
        poll(ctx)  # stops the batch; its cancel fails
        poll(ctx)  # the claim is younger than the lease: nobody sends it again yet
        assert emu.stats.calls[CANCEL] == 1
        assert emu.batches()[0]["status"] == "in_progress"
        time.sleep(0.35)
        poll(ctx)
        assert emu.stats.calls[CANCEL] == 2
        assert emu.batches()[0]["status"] in ("cancelling", "cancelled")
        summary = _wait(run)
    assert summary.status is RunStatus.COMPLETED
    assert (summary.timed_out_batches, summary.timeout_requeued) == (1, HELD_ANSWERED)
    assert emu.stats.batches_created == 2


# ---- run deadline ---------------------------------------------------------------------------


def _check_deadline(
    emu: OpenAIBatchEmulator,
    runner: BatchRunner,
    summary: RunSummary,
    *,
    completed: int,
    total: int = ITEMS,
) -> None:
    """The held batch was cancelled once with its answered lines kept; every other item
    ended ``deadline`` without an attempt charged; nothing was created after the deadline."""
    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    assert emu.stats.calls[CANCEL] == 1
    assert summary.deadline_at is not None
    assert all(b["created_at"] <= summary.deadline_at for b in emu.batches())
    results = list(runner.get_run(summary.run_id).results())
    done = [r for r in results if r.status is ItemStatus.COMPLETED]
    failed = [r for r in results if r.status is ItemStatus.FAILED]
    assert len(done) == completed
    assert len(failed) == total - completed
    assert {r.error.error_class for r in failed if r.error} == {"deadline"}
    assert all(r.error and "deadline" in r.error.message for r in failed)
    assert {r.attempts for r in failed} == {0}
    assert {r.attempts for r in done} == {1}
    assert summary.deadline_failed == len(failed)
    assert summary.timed_out_batches == 0
    assert (summary.usage.input_tokens, summary.usage.output_tokens) == _billed(emu)


def test_past_the_deadline_live_batches_stop_and_the_rest_fail(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first batch is refused for capacity: its items wait, pending, while packing backs
    # off (longer than the deadline); the second is held open.
    monkeypatch.setattr("batchor.engine.collect._CAPACITY_BACKOFF", {"base": 60, "cap": 60})
    faults = EmulatorFaults(fail_token_limit_count=1, hold_count=1)
    n = 2 * PER_BATCH
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        run = runner.start(_job(emu, n=n, deadline=1.5), "deadline")
        summary = _wait(run)
        _check_deadline(emu, runner, summary, completed=HELD_ANSWERED, total=n)
        assert emu.stats.batches_created == 2
        assert [b["status"] for b in emu.batches()] == ["failed", "cancelled"]


def test_past_the_deadline_a_batch_never_created_is_dropped(runner: BatchRunner) -> None:
    # Room for one batch's tokens under the enqueued-token limit: the second batch is
    # uploaded but waits to be created, and never is.
    faults = EmulatorFaults(hold_count=1)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        run = runner.start(_job(emu, deadline=1.5, token_limit=250), "unsent")
        summary = _wait(run)
        _check_deadline(emu, runner, summary, completed=HELD_ANSWERED)
        assert emu.stats.batches_created == 1
        uploads = [f for f in emu.files() if f["purpose"] == "batch"]
        assert len(uploads) == 1  # the unsent batches' uploads were deleted
        assert {b.provider_status for b in run.batches()} == {"cancelled", "not_sent"}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["fresh-process", "two-workers"])
def test_a_deadline_is_enforced_once_from_fresh_processes(
    store_url: str, tmp_path: Path, workers: int
) -> None:
    faults = EmulatorFaults(hold_count=1)
    with (
        OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu,
        BatchRunner(store_url, tmp_path / "artifacts") as runner,
    ):
        runner.start(_job(emu, deadline=2.5), "deadline")
        finals = drive_in_processes(emu, store_url, tmp_path, "deadline", workers)
        assert {s["status"] for s in finals} == {"completed_with_failures"}
        summary = runner.get_run("deadline").summary()
        _check_deadline(emu, runner, summary, completed=2 * PER_BATCH + HELD_ANSWERED)
        assert emu.stats.batches_created == 3
