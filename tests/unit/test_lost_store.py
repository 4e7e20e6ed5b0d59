"""A run started again on an empty store (its first store was lost) finds the provider batches
its first life created, by their metadata: one with the same requests is adopted, one with
other requests stops the run rather than pay twice; one that never bought anything is not in
the way."""

from __future__ import annotations

import time
from typing import Any

import pytest

from batchor import BatchRunner, Run, RunStatus
from batchor.testing import InProcessBatchTransport

from .helpers import CREATE, LIST, assert_exactly_once, drive, make_items, make_job


def fresh_runner(transport: InProcessBatchTransport, artifacts_url: str) -> BatchRunner:
    """Another runner on the same provider, with a new, empty store."""
    return BatchRunner("memory://", artifacts_url, provider=transport)


def test_a_run_started_again_on_an_empty_store_adopts_its_batches(
    runner: BatchRunner, transport: InProcessBatchTransport, artifacts_url: str
) -> None:
    items = make_items(6)
    runner.start(make_job(items, max_requests=3), "lost")  # then the store is lost
    assert transport.stats.batches_created == 2

    with fresh_runner(transport, artifacts_url) as again:
        run = again.start(make_job(items, max_requests=3), "lost")
        summary = drive(run)
        assert summary.status is RunStatus.COMPLETED
        assert summary.completed == 6
        assert {r.attempts for r in run.results()} == {1}
        ids = [b["id"] for b in transport.batches()]
        assert [b.provider_batch_id for b in run.batches()] == ids
    assert transport.stats.batches_created == 2  # adopted, not bought again
    assert_exactly_once(transport)
    assert transport.stats.calls[LIST] == 2  # one listing per life, not one per batch


def test_a_batch_with_the_same_key_but_other_requests_pauses_the_run(
    runner: BatchRunner, transport: InProcessBatchTransport, artifacts_url: str
) -> None:
    runner.start(make_job(make_items(4, text="first {i}"), max_requests=2), "other-input")

    with fresh_runner(transport, artifacts_url) as again:
        run = again.start(make_job(make_items(4, text="second {i}"), max_requests=2), "other-input")
        summary = run.summary()
        assert summary.status is RunStatus.PAUSED
        assert summary.pause_reason is not None
        assert "already carries this run id and batch key" in summary.pause_reason
        assert transport.batches()[0]["id"] in summary.pause_reason
    assert transport.stats.batches_created == 2
    assert transport.stats.calls[CREATE] == 2


def cancel_first_life(runner: BatchRunner, transport: InProcessBatchTransport) -> dict[str, Any]:
    """Start a run of ``first`` prompts and cancel its batch at the provider; returns it."""
    runner.start(make_job(make_items(2, text="first {i}"), structured=None), "cancelled-before")
    (old,) = transport.batches()
    transport.cancel_batch(old["id"])
    deadline = time.monotonic() + 10
    while transport.retrieve_batch(old["id"]).status != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return old


def second_life(runner: BatchRunner) -> Run:
    return runner.start(
        make_job(make_items(2, text="second {i}"), structured=None), "cancelled-before"
    )


@pytest.mark.parametrize("phase_seconds", [0.2])
def test_a_cancelled_batch_with_other_requests_is_not_in_the_way(
    runner: BatchRunner, transport: InProcessBatchTransport, artifacts_url: str
) -> None:
    old = cancel_first_life(runner, transport)
    with fresh_runner(transport, artifacts_url) as again:
        run = second_life(again)
        assert run.summary().status is RunStatus.RUNNING  # not refused
        assert drive(run).completed == 2
    old_batch, new_batch = transport.batches()
    assert old_batch["id"] == old["id"]
    assert new_batch["metadata"]["batchor_batch_key"] == old["metadata"]["batchor_batch_key"]
    assert new_batch["metadata"]["batchor_input_sha256"] != old["metadata"]["batchor_input_sha256"]


@pytest.mark.parametrize("phase_seconds", [0.2])
def test_the_batch_created_in_its_place_sends_the_new_requests(
    runner: BatchRunner, transport: InProcessBatchTransport, artifacts_url: str
) -> None:
    old = cancel_first_life(runner, transport)
    with fresh_runner(transport, artifacts_url) as again:
        run = second_life(again)
        assert drive(run).completed == 2
        assert [r.output_text for r in run.results()] == ["Echo: second 0", "Echo: second 1"]
    assert transport.batches()[1]["input_file_id"] != old["input_file_id"]
