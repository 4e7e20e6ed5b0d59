"""A failed line is retried in a later batch while attempts are left, then fails with its
error class; a request the provider calls invalid fails at once."""

from __future__ import annotations

import pytest

from batchor import BatchRunner, ItemStatus, RunStatus
from batchor.testing import InProcessBatchTransport

from .helpers import assert_exactly_once, by_id, drive, line_fault_on, make_items, make_job

# (fault the provider answers the line with, the error class the item fails with)
RETRYABLE = [
    ("server_error", "server_error"),
    ("rate_limit", "rate_limited"),
    ("invalid_json", "invalid_json"),
    ("schema_mismatch", "schema_validation"),
]


@pytest.mark.parametrize(("fault", "error_class"), RETRYABLE)
def test_a_retryable_failure_is_retried_up_to_max_attempts_then_fails_with_its_class(
    runner: BatchRunner, transport: InProcessBatchTransport, fault: str, error_class: str
) -> None:
    transport.faults.line_fault = line_fault_on(["review 1"], fault)
    run = runner.start(make_job(make_items(4), max_attempts=3), f"always-{fault}")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    assert (summary.completed, summary.failed) == (3, 1)
    results = by_id(run)
    failed = results.pop("item-1")
    assert failed.status is ItemStatus.FAILED
    assert failed.output is None
    assert failed.attempts == 3
    assert failed.error is not None
    assert failed.error.error_class == error_class
    assert failed.error.retryable is True
    assert failed.error.attempt == 3
    assert failed.error.message
    assert {r.attempts for r in results.values()} == {1}
    # Its line was sent once per attempt, each time in a new batch; nothing else twice.
    assert transport.stats.lines_answered["2"] == 3
    assert sum(transport.stats.lines_answered.values()) == 3 + 3
    assert transport.stats.batches_created == 3
    assert_exactly_once(transport)


@pytest.mark.parametrize(("fault", "error_class"), RETRYABLE)
def test_a_failure_that_clears_before_the_last_attempt_completes_the_item(
    runner: BatchRunner, transport: InProcessBatchTransport, fault: str, error_class: str
) -> None:
    transport.faults.line_fault = line_fault_on(["review 0", "review 2"], fault, times=2)
    run = runner.start(make_job(make_items(3), max_attempts=3), f"twice-{fault}")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    results = by_id(run)
    assert [results[f"item-{i}"].attempts for i in range(3)] == [3, 1, 3]
    assert all(r.error is None for r in results.values())
    assert all(r.status is ItemStatus.COMPLETED for r in results.values())
    assert transport.stats.batches_created == 3
    assert_exactly_once(transport)


def test_a_single_attempt_fails_on_the_first_retryable_failure(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.line_fault = line_fault_on(["review 0"], "server_error", times=1)
    run = runner.start(make_job(make_items(2), max_attempts=1), "one-attempt")
    drive(run)

    failed = by_id(run)["item-0"]
    assert failed.status is ItemStatus.FAILED
    assert failed.attempts == 1
    assert failed.error is not None
    assert failed.error.error_class == "server_error"
    assert transport.stats.batches_created == 1


def test_an_invalid_request_fails_at_once_with_one_attempt(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.line_fault = line_fault_on(["review 2"], "bad_request")
    run = runner.start(make_job(make_items(4), max_attempts=5), "bad-request")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    failed = by_id(run)["item-2"]
    assert failed.status is ItemStatus.FAILED
    assert failed.attempts == 1
    assert failed.error is not None
    assert failed.error.error_class == "invalid_request"
    assert failed.error.retryable is False
    assert failed.error.attempt == 1
    assert "400" in failed.error.message
    assert transport.stats.lines_answered["3"] == 1
    assert transport.stats.batches_created == 1


def test_each_item_keeps_its_own_failure(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    faults = {"review 0": "bad_request", "review 1": "rate_limit", "review 3": "schema_mismatch"}
    transport.faults.line_fault = lambda _id, body: faults.get(body.get("input", ""))
    run = runner.start(make_job(make_items(5), max_attempts=2), "mixed")
    summary = drive(run)

    assert (summary.completed, summary.failed) == (2, 3)
    results = by_id(run)
    failures = {
        item_id: (r.error.error_class, r.attempts)
        for item_id, r in results.items()
        if r.error is not None
    }
    assert failures == {
        "item-0": ("invalid_request", 1),
        "item-1": ("rate_limited", 2),
        "item-3": ("schema_validation", 2),
    }
    assert results["item-2"].status is ItemStatus.COMPLETED
    assert results["item-4"].status is ItemStatus.COMPLETED
    assert transport.stats.batches_created == 2
    assert_exactly_once(transport)


def test_a_reply_failing_validation_is_not_checked_without_structured_output(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    # Plain text jobs take any reply text as it is: only structured output is validated.
    transport.faults.line_fault = line_fault_on(["review 0"], "invalid_json")
    run = runner.start(make_job(make_items(2), structured=None), "plain-invalid-json")
    assert drive(run).status is RunStatus.COMPLETED
    result = by_id(run)["item-0"]
    assert result.attempts == 1
    assert result.output == result.output_text
    assert transport.stats.batches_created == 1
