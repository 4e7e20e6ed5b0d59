"""A provider that takes a batch's requests inline in the create call and keeps no metadata
(as Anthropic's Message Batches): nothing is uploaded, and a batch whose create answer was
lost is recognised by when it was made and how many requests it holds, one unsettled create
of a run at a time, so it is adopted and never bought twice."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import BinaryIO

import pytest

from batchor import BatchRunner, BatchStatus, RunStatus
from batchor.engine.submit import INLINE_FILE_ID
from batchor.providers.base import ProviderBatch, TransientProviderError
from batchor.testing import InProcessBatchTransport

from .helpers import drive, make_items, make_job


class InlineUntagged(InProcessBatchTransport):
    """The in-process provider seen through an inline, metadata-less API: the requests come
    with the create call, and batches come back without the metadata they were made with.
    The first ``lose`` create answers never arrive, though their batches were made."""

    def __init__(self, lose: int = 0) -> None:
        super().__init__()
        self.inline_requests = True
        self.tags_batches = False
        self.lose = lose
        self.on_create: Callable[[], None] = lambda: None
        self.created: list[ProviderBatch] = []
        self.sent_metadata: list[Mapping[str, str]] = []

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        raise AssertionError("an inline provider is never asked to upload")

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        raise AssertionError("an inline provider is never asked for uploads")

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        assert input_file_id == INLINE_FILE_ID
        assert content is not None
        self.on_create()
        with content() as fh:
            file_id = super().upload_file(fh, "inline.jsonl")
        self.sent_metadata.append(metadata)
        batch = self._counted(_bare(super().create_batch(file_id, endpoint, {})))
        self.created.append(batch)
        if self.lose > 0:
            self.lose -= 1
            raise TransientProviderError("the create timed out")
        return batch

    def foreign(self, like: ProviderBatch) -> ProviderBatch:
        """A batch another client made at the same moment with as many requests (once both
        have been counted: the emulator counts a batch's requests as it validates it)."""
        assert like.input_file_id is not None
        return self._counted(_bare(super().create_batch(like.input_file_id, "/v1/responses", {})))

    def _counted(self, batch: ProviderBatch) -> ProviderBatch:
        """``batch`` once the emulator has counted its requests (it counts them as it
        validates the batch, on its own thread): an inline API such as Anthropic's reports
        a batch's request count from its creation, so a lookup right after a lost create
        answer must see it. On a loaded machine the count can otherwise lag."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            counted = self.retrieve_batch(batch.id)
            if counted.request_count:
                return counted
            time.sleep(0.005)
        raise AssertionError(f"the emulator never counted the requests of {batch.id}")

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        return _bare(super().retrieve_batch(batch_id))

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        return (_bare(b) for b in super().list_batches(created_after))

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        return _bare(super().cancel_batch(batch_id))


def _bare(batch: ProviderBatch) -> ProviderBatch:
    return dataclasses.replace(batch, metadata={})


@pytest.fixture
def inline() -> Iterator[InlineUntagged]:
    with InlineUntagged() as started:
        yield started


def runner_on(transport: InlineUntagged, artifacts_url: str) -> BatchRunner:
    return BatchRunner("memory://", artifacts_url, provider=transport)


def test_requests_go_inline_and_every_batch_is_made_once(
    inline: InlineUntagged, artifacts_url: str
) -> None:
    with runner_on(inline, artifacts_url) as runner:
        run = runner.start(make_job(make_items(7), max_requests=3), "inline")
        summary = drive(run)
        assert summary.status is RunStatus.COMPLETED
        assert summary.completed == 7
        assert [b.provider_batch_id for b in run.batches()] == [b.id for b in inline.created]
    assert len(inline.created) == 3
    assert inline.stats.calls[("GET", "/v1/batches")] == 0  # no lookup: nothing to match by


def test_a_lost_create_answer_is_adopted_by_time_and_size_not_bought_again(
    artifacts_url: str,
) -> None:
    with InlineUntagged(lose=2) as lossy, runner_on(lossy, artifacts_url) as runner:
        run = runner.start(make_job(make_items(5), max_requests=3), "inline-lost")
        summary = drive(run)
        assert summary.status is RunStatus.COMPLETED
        assert summary.completed == 5
        assert {r.attempts for r in run.results()} == {1}
        # Two batches (3 and 2 requests), each made once although both answers were lost.
        assert len(lossy.created) == 2
        assert [b.provider_batch_id for b in run.batches()] == [b.id for b in lossy.created]


def test_only_one_create_of_a_run_is_unsettled_at_a_time(artifacts_url: str) -> None:
    with InlineUntagged(lose=2) as lossy, runner_on(lossy, artifacts_url) as runner:
        unsettled: list[int] = []

        def count_unsettled() -> None:
            # Creates claimed (this one included) whose provider batch is not recorded.
            record = runner.store.get_run("inline-one-at-a-time")
            assert record is not None
            rows = runner.store.batches(record.pk, [BatchStatus.UPLOADED])
            unsettled.append(sum(1 for b in rows if b.create_started_at is not None))

        lossy.on_create = count_unsettled
        run = runner.start(make_job(make_items(6), max_requests=2), "inline-one-at-a-time")
        summary = drive(run)
        assert summary.completed == 6
        assert len(lossy.created) == 3  # each batch made once, though two answers were lost
        assert unsettled == [1, 1, 1]  # the batch being created, never another beside it


def test_two_batches_that_may_be_the_lost_one_stop_the_run_rather_than_guess(
    artifacts_url: str,
) -> None:
    with InlineUntagged(lose=1) as lossy, runner_on(lossy, artifacts_url) as runner:
        run = runner.start(make_job(make_items(3)), "inline-ambiguous")
        [ours] = lossy.created
        theirs = lossy.foreign(ours)  # same moment, same size: indistinguishable
        for _ in range(200):  # past the backoff the lost answer set
            summary = run.refresh()
            if summary.status is not RunStatus.RUNNING:
                break
            time.sleep(0.01)
        assert summary.status is RunStatus.PAUSED
        reason = runner.store.get_run("inline-ambiguous").pause_reason or ""  # type: ignore[union-attr]
        assert ours.id in reason
        assert theirs.id in reason
        assert "\n" not in reason
        assert len(lossy.created) == 1  # nothing created meanwhile


def test_a_cancel_after_a_lost_create_answer_adopts_the_batch(artifacts_url: str) -> None:
    with InlineUntagged(lose=1) as lossy, runner_on(lossy, artifacts_url) as runner:
        run = runner.start(make_job(make_items(3)), "inline-cancel")
        final = run.cancel()
        assert final.status is RunStatus.CANCELLED or final.status is RunStatus.CANCELLING
        assert [b.provider_batch_id for b in run.batches()] == [lossy.created[0].id]
        assert drive(run).completed == 3  # the batch made was collected, not dropped
