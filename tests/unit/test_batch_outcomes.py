"""What a provider batch that ends without answering every line means for its items and the
run: expired and cancelled batches never ran the rest (requeued free), a failed batch charges
them, an account out of quota pauses the run, a capacity refusal backs packing off."""

from __future__ import annotations

import time
from typing import Any

import pytest

from batchor import BatchRunner, ItemStatus, Run, RunStateError, RunStatus
from batchor.testing import InProcessBatchTransport

from .helpers import CREATE, assert_exactly_once, by_id, drive, make_items, make_job


def provider_statuses(transport: InProcessBatchTransport) -> list[str]:
    return [b["status"] for b in transport.batches()]


def sizes(transport: InProcessBatchTransport) -> list[int]:
    return [b["request_counts"]["total"] for b in transport.batches()]


def refresh_until_collected(run: Run, count: int, timeout: float = 10.0) -> None:
    """Refresh until ``count`` of the run's batches are collected."""
    deadline = time.monotonic() + timeout
    while sum(b.status == "collected" for b in run.batches()) < count:
        assert time.monotonic() < deadline, run.batches()
        run.refresh()
        time.sleep(0.005)


def test_an_expired_batch_keeps_its_answers_and_requeues_the_rest_free(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.expire_count = 1
    # One attempt only: an unanswered item charged an attempt would fail.
    run = runner.start(make_job(make_items(10), max_attempts=1), "expired")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 10
    assert {r.attempts for r in run.results()} == {1}
    assert provider_statuses(transport) == ["expired", "completed"]
    assert sizes(transport) == [10, 5]  # the half it never ran went again
    assert set(transport.stats.lines_answered.values()) == {1}  # nothing bought twice
    assert_exactly_once(transport)


@pytest.mark.parametrize("phase_seconds", [0.2])
def test_a_batch_cancelled_at_the_provider_requeues_its_items_free(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(6), max_attempts=1), "cancelled-remotely")
    (batch,) = transport.batches()
    transport.cancel_batch(batch["id"])  # someone cancels it in the provider's dashboard
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 6
    assert {r.attempts for r in run.results()} == {1}
    assert provider_statuses(transport) == ["cancelled", "completed"]
    assert_exactly_once(transport)


@pytest.mark.parametrize(("max_attempts", "completed"), [(2, 6), (1, 0)])
def test_a_failed_batch_charges_its_items_an_attempt(
    runner: BatchRunner, transport: InProcessBatchTransport, max_attempts: int, completed: int
) -> None:
    transport.faults.fail_batch_count = 1
    transport.faults.fail_batch_errors = [("invalid_input", "Line 3 is not a valid request.")]
    run = runner.start(make_job(make_items(6), max_attempts=max_attempts), "failed-batch")
    summary = drive(run)

    assert summary.completed == completed
    assert summary.failed == 6 - completed
    results = list(run.results())
    if completed:
        assert summary.status is RunStatus.COMPLETED
        assert {r.attempts for r in results} == {2}
        assert provider_statuses(transport) == ["failed", "completed"]
    else:
        assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
        for result in results:
            assert result.attempts == 1
            assert result.error is not None
            assert result.error.error_class == "batch_failed"
            assert "invalid_input: Line 3 is not a valid request." in result.error.message
        assert provider_statuses(transport) == ["failed"]
    assert_exactly_once(transport)


def test_a_completed_batch_missing_a_line_charges_that_item(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    lost: list[str] = []

    def lose_item_2_once(line: dict[str, Any]) -> dict[str, Any] | None:
        if line["custom_id"] == "2" and not lost:
            lost.append(line["custom_id"])
            return None  # the provider's completed batch has no line for it
        return line

    transport.faults.line_rewrite = lose_item_2_once
    run = runner.start(make_job(make_items(3), max_attempts=2), "missing-line")
    assert drive(run).status is RunStatus.COMPLETED
    results = by_id(run)
    assert results["item-1"].attempts == 2  # charged for the missing line, then answered
    assert results["item-0"].attempts == results["item-2"].attempts == 1
    assert sizes(transport) == [3, 1]


def test_a_completed_batch_missing_a_line_fails_the_item_on_its_last_attempt(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.line_rewrite = lambda line: None if line["custom_id"] == "1" else line
    run = runner.start(make_job(make_items(2), max_attempts=1), "missing-line-last")
    drive(run)
    failed = by_id(run)["item-0"]
    assert failed.status is ItemStatus.FAILED
    assert failed.error is not None
    assert failed.error.error_class == "missing_output"
    assert failed.attempts == 1


def test_insufficient_quota_at_create_pauses_the_run_with_the_reason(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.create_insufficient_quota_count = 1
    run = runner.start(make_job(make_items(5), max_attempts=1), "no-quota")

    summary = run.summary()
    assert summary.status is RunStatus.PAUSED
    assert summary.pause_reason is not None
    assert "insufficient_quota" in summary.pause_reason
    assert summary.is_stalled
    with pytest.raises(RunStateError, match="is paused"):
        drive(run)
    run.refresh()  # a paused run sends nothing
    assert transport.stats.calls[CREATE] == 1
    assert transport.stats.batches_created == 0

    run.resume()  # topped up
    final = drive(run)
    assert final.status is RunStatus.COMPLETED
    assert final.completed == 5
    assert final.pause_reason is None
    assert {r.attempts for r in run.results()} == {1}
    assert transport.stats.calls[CREATE] == 2
    assert_exactly_once(transport)


def test_a_batch_failed_for_quota_pauses_the_run_and_charges_nothing(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.fail_batch_count = 1  # errors: insufficient_quota (the default)
    run = runner.start(make_job(make_items(4), max_attempts=1), "quota-batch")
    with pytest.raises(RunStateError, match="insufficient_quota"):
        drive(run)
    summary = run.summary()
    assert summary.status is RunStatus.PAUSED
    assert summary.items[ItemStatus.PENDING] == 4
    assert summary.failed == 0

    run.resume()
    assert drive(run).completed == 4
    assert {r.attempts for r in run.results()} == {1}
    assert provider_statuses(transport) == ["failed", "completed"]


def test_a_token_limit_refusal_backs_packing_off_then_resumes_it(
    runner: BatchRunner, transport: InProcessBatchTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchor.engine.collect._CAPACITY_BACKOFF", {"base": 0.6, "cap": 0.6})
    transport.faults.fail_token_limit_count = 1
    run = runner.start(make_job(make_items(4), max_attempts=1), "capacity")
    refresh_until_collected(run, 1)

    record = runner.store.get_run("capacity")
    assert record is not None
    assert record.backoff_count == 1
    assert record.backoff_until is not None
    assert time.time() < record.backoff_until <= time.time() + 0.6
    run.refresh()
    assert transport.stats.calls[CREATE] == 1  # nothing packed while backing off
    assert run.summary().items[ItemStatus.PENDING] == 4  # requeued, not charged

    final = drive(run)
    assert final.status is RunStatus.COMPLETED
    assert {r.attempts for r in run.results()} == {1}
    assert provider_statuses(transport) == ["failed", "completed"]
    assert transport.batches()[0]["errors"]["data"][0]["code"] == "token_limit_exceeded"
    after = runner.store.get_run("capacity")
    assert after is not None
    assert after.backoff_count == 0  # a completed batch ends the backoff


def test_a_batch_the_provider_refuses_to_create_charges_its_items(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.create_reject_count = 1
    run = runner.start(make_job(make_items(3), max_attempts=2), "refused")
    assert drive(run).status is RunStatus.COMPLETED

    assert {r.attempts for r in run.results()} == {2}
    infos = run.batches()
    assert [(b.provider_status, b.provider_batch_id is None) for b in infos] == [
        ("rejected", True),
        ("completed", False),
    ]
    assert transport.stats.calls[CREATE] == 2
    assert transport.stats.batches_created == 1
