"""A provider call that fails transiently is tried again later, and never buys a second
provider batch: not when the upload, the create, the poll or the download fails, and not when
a create reached the provider but its answer was lost."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import BinaryIO

import pytest

from batchor import BatchRunner, ItemStatus, RunStatus
from batchor.providers.base import ProviderBatch, TransientProviderError
from batchor.testing import EmulatorFaults, InProcessBatchTransport

from .helpers import (
    CREATE,
    DOWNLOAD,
    LIST,
    RETRIEVE,
    UPLOAD,
    assert_exactly_once,
    drive,
    make_items,
    make_job,
)


@pytest.mark.parametrize(
    "call",
    [UPLOAD, CREATE, LIST, DOWNLOAD, ("GET", "/v1/files")],
    ids=lambda call: " ".join(call),
)
def test_a_call_failing_twice_is_retried_and_the_batch_created_once(
    runner: BatchRunner, transport: InProcessBatchTransport, call: tuple[str, str]
) -> None:
    transport.faults.route_server_error_counts[" ".join(call)] = 2
    run = runner.start(make_job(make_items(5), max_attempts=1), "flaky-call")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 5
    assert {r.attempts for r in run.results()} == {1}  # a call's failure charges no item
    assert transport.stats.calls[call] == 3
    assert transport.stats.batches_created == 1
    assert_exactly_once(transport)
    assert len([f for f in transport.files() if f["purpose"] == "batch"]) <= 1


def test_a_poll_failing_is_retried_and_the_batch_collected(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.route_server_error_counts["GET /v1/batches/{id}"] = 3
    run = runner.start(make_job(make_items(4), max_attempts=1), "flaky-poll")
    assert drive(run).completed == 4
    assert transport.stats.calls[RETRIEVE] >= 4
    assert transport.stats.batches_created == 1


def test_a_failed_upload_leaves_the_batch_prepared_until_its_backoff_passes(
    runner: BatchRunner, transport: InProcessBatchTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchor.engine.backoff.BASE_SECONDS", 0.5)
    transport.faults.route_server_error_counts["POST /v1/files"] = 1
    run = runner.start(make_job(make_items(3)), "upload-backoff")
    run.refresh()  # within the backoff: not tried again

    assert [b.status for b in run.batches()] == ["prepared"]
    assert transport.stats.calls[UPLOAD] == 1
    assert run.summary().items[ItemStatus.QUEUED] == 3
    assert drive(run).completed == 3
    assert transport.stats.calls[UPLOAD] == 2


def test_a_rate_limited_create_is_retried_later(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.create_rate_limit_count = 2
    run = runner.start(make_job(make_items(4), max_requests=2), "429")
    assert drive(run).completed == 4
    assert transport.stats.calls[CREATE] == 4
    assert transport.stats.batches_created == 2
    assert_exactly_once(transport)


def test_random_server_errors_on_every_kind_of_call_buy_each_batch_once(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.seed = 11
    transport.faults.http_server_error_rate = 0.3
    run = runner.start(make_job(make_items(24), max_requests=5), "chaos")
    summary = drive(run, timeout=30)
    assert summary.completed == 24
    assert {r.attempts for r in run.results()} == {1}
    assert transport.stats.batches_created == 5
    assert_exactly_once(transport)
    assert set(transport.stats.lines_answered.values()) == {1}


class LostCreateAnswers(InProcessBatchTransport):
    """A provider whose first ``lose`` create answers never arrive, though the batch was
    created (a timeout after the request landed)."""

    def __init__(self, lose: int, faults: EmulatorFaults | None = None) -> None:
        super().__init__(faults=faults)
        self.lose = lose
        self.created: list[str] = []

    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> ProviderBatch:
        batch = super().create_batch(input_file_id, endpoint, metadata)
        self.created.append(batch.id)
        if self.lose > 0:
            self.lose -= 1
            raise TransientProviderError("the create timed out")
        return batch


@pytest.fixture
def lossy() -> Iterator[LostCreateAnswers]:
    with LostCreateAnswers(lose=2) as started:
        yield started


@pytest.fixture
def lossy_runner(lossy: LostCreateAnswers, artifacts_url: str) -> Iterator[BatchRunner]:
    with BatchRunner("memory://", artifacts_url, provider=lossy) as opened:
        yield opened


def test_a_create_whose_answer_was_lost_is_adopted_not_created_again(
    lossy: LostCreateAnswers, lossy_runner: BatchRunner
) -> None:
    run = lossy_runner.start(make_job(make_items(6), max_requests=3), "lost-answer")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 6
    assert {r.attempts for r in run.results()} == {1}
    assert lossy.stats.calls[CREATE] == 2  # each key created once, never again
    assert_exactly_once(lossy)
    assert [b.provider_batch_id for b in run.batches()] == lossy.created
    assert set(lossy.stats.lines_answered.values()) == {1}


def test_a_second_handle_adopts_a_create_whose_answer_was_lost(
    lossy: LostCreateAnswers, lossy_runner: BatchRunner
) -> None:
    lossy_runner.start(make_job(make_items(2)), "lost-then-other")
    assert [b.status for b in lossy_runner.get_run("lost-then-other").batches()] == ["uploaded"]

    summary = drive(lossy_runner.get_run("lost-then-other"))
    assert summary.completed == 2
    assert lossy.stats.batches_created == 1
    assert lossy.stats.calls[CREATE] == 1


def test_cancelling_after_a_lost_create_answer_adopts_the_batch_and_collects_it(
    lossy: LostCreateAnswers, lossy_runner: BatchRunner
) -> None:
    run = lossy_runner.start(make_job(make_items(3)), "lost-then-cancel")
    run.cancel()  # the batch may be at the provider: it is looked for, not dropped
    summary = drive(run)

    assert summary.status is RunStatus.CANCELLED
    assert summary.completed == 3  # bought, so collected
    assert summary.items[ItemStatus.CANCELLED] == 0
    assert lossy.stats.batches_created == 1
    assert lossy.stats.calls[CREATE] == 1
    assert [b.provider_batch_id for b in run.batches()] == lossy.created


class LaggingUploads(InProcessBatchTransport):
    """A provider whose first ``lose`` upload answers never arrive (the file was stored),
    and whose file listing misses new files for its first ``lag`` lookups."""

    def __init__(self, lose: int, lag: int) -> None:
        super().__init__()
        self.lose, self.lag = lose, lag
        self.uploaded: list[str] = []

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        file_id = super().upload_file(content, filename)
        self.uploaded.append(file_id)
        if self.lose > 0:
            self.lose -= 1
            raise TransientProviderError("the upload timed out")
        return file_id

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        found = super().find_uploads(filename, created_after)
        if self.lag > 0:
            self.lag -= 1
            return []
        return found


@pytest.mark.parametrize(("lose", "lag"), [(1, 0), (2, 2)])
def test_an_upload_whose_answer_was_lost_is_adopted_and_extra_copies_deleted(
    artifacts_url: str, lose: int, lag: int
) -> None:
    with (
        LaggingUploads(lose=lose, lag=lag) as transport,
        BatchRunner("memory://", artifacts_url, provider=transport) as runner,
    ):
        run = runner.start(make_job(make_items(3)), "lost-upload")
        assert drive(run).completed == 3

        assert transport.stats.calls[UPLOAD] == lose  # never uploaded again once found
        (batch,) = transport.batches()
        assert batch["input_file_id"] == transport.uploaded[-1]  # the newest copy
        kept = [f["id"] for f in transport.files() if f["purpose"] == "batch"]
        assert kept == [transport.uploaded[-1]]  # older copies deleted
        assert_exactly_once(transport)


def test_a_transient_failure_is_one_of_batchor_errors_and_retryable() -> None:
    import batchor
    from batchor.errors import is_permanent

    # The class the transports raise is the public one, in the one error tree.
    assert TransientProviderError is batchor.TransientProviderError
    assert TransientProviderError.__module__ == "batchor.errors"
    error = TransientProviderError("the download of file-1 broke off")
    assert isinstance(error, batchor.ProviderError)
    assert isinstance(error, batchor.BatchorError)
    assert not is_permanent(error)
