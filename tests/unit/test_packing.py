"""Packing fills each provider batch up to, and never past, the job's request count, byte size
and enqueued-token limits; a request that can never fit fails alone without being sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from batchor import BatchItem, BatchJob, BatchRunner, ItemStatus, RunStatus
from batchor.providers.base import ProviderBatch
from batchor.runner import job_codec
from batchor.testing import InProcessBatchTransport

from .helpers import assert_exactly_once, by_id, drive, make_items, make_job, prompt


def batch_sizes(transport: InProcessBatchTransport) -> list[int]:
    """Requests in each provider batch, oldest first."""
    return [b["request_counts"]["total"] for b in transport.batches()]


def input_bytes(transport: InProcessBatchTransport) -> list[int]:
    """The size of each provider batch's input file, oldest first."""
    sizes = {f["id"]: f["bytes"] for f in transport.files()}
    return [sizes[b["input_file_id"]] for b in transport.batches()]


def line_lengths(job: BatchJob, items: list[BatchItem]) -> list[int]:
    """The byte length of each item's batch input line (its custom id is its 1-based seq)."""
    codec = job_codec(job)
    return [
        len(codec.frame(seq, codec.encode_body(prompt(item))))
        for seq, item in enumerate(items, start=1)
    ]


@pytest.mark.parametrize(("n", "max_requests", "sizes"), [(10, 4, [4, 4, 2]), (6, 3, [3, 3])])
def test_batches_hold_at_most_max_requests(
    runner: BatchRunner,
    transport: InProcessBatchTransport,
    n: int,
    max_requests: int,
    sizes: list[int],
) -> None:
    run = runner.start(make_job(make_items(n), max_requests=max_requests), "by-count")
    assert drive(run).completed == n
    assert batch_sizes(transport) == sizes
    assert [b.requests for b in run.batches()] == sizes
    assert_exactly_once(transport)
    assert set(transport.stats.lines_answered.values()) == {1}  # each item in one batch


def test_a_batch_is_filled_to_exactly_max_bytes_and_not_past_it(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(9, text="review {i:03d}")
    lengths = line_lengths(make_job(items), items)
    # The first three lines fill a batch to the byte: a fourth would not fit.
    limit = sum(lengths[:3])
    assert limit >= 1_000
    run = runner.start(make_job(items, max_bytes=limit), "by-bytes")
    assert drive(run).completed == 9

    assert batch_sizes(transport) == [3, 3, 3]
    assert input_bytes(transport) == [
        sum(lengths[0:3]),
        sum(lengths[3:6]),
        sum(lengths[6:9]),
    ]
    assert_exactly_once(transport)


def test_one_byte_less_moves_the_last_request_to_the_next_batch(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(6, text="review {i:03d}")
    lengths = line_lengths(make_job(items), items)
    run = runner.start(make_job(items, max_bytes=sum(lengths[:3]) - 1), "by-bytes-less")
    assert drive(run).completed == 6
    assert batch_sizes(transport) == [2, 2, 2]
    assert max(input_bytes(transport)) <= sum(lengths[:3]) - 1


def test_a_request_larger_than_a_batch_fails_alone_unsent(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(5)
    items[2] = BatchItem(item_id="huge", payload={"text": "x" * 5_000}, metadata={"row": 2})
    run = runner.start(make_job(items, max_bytes=4_000), "too-large")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    results = by_id(run)
    huge = results.pop("huge")
    assert huge.status is ItemStatus.FAILED
    assert huge.error is not None
    assert huge.error.error_class == "request_too_large"
    assert "4000 bytes" in huge.error.message
    assert huge.attempts == 1
    assert {r.status for r in results.values()} == {ItemStatus.COMPLETED}
    assert sum(batch_sizes(transport)) == 4
    assert "3" not in transport.stats.lines_answered  # its line (seq 3) was never sent


def estimated(job: BatchJob, item: BatchItem) -> int:
    return job_codec(job).estimate_tokens(prompt(item))


class _InFlightCheck(InProcessBatchTransport):
    """Records, at each create, how many earlier batches the provider still runs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.live_at_create: list[int] = []

    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> ProviderBatch:
        live = [b for b in self.batches() if b["status"] not in ("completed", "failed")]
        self.live_at_create.append(len(live))
        return super().create_batch(input_file_id, endpoint, metadata)


def test_the_token_limit_cuts_batches_and_holds_each_until_the_last_is_collected(
    artifacts_url: str,
) -> None:
    items = make_items(7, text="review {i:03d}")
    per_item = estimated(make_job(items), items[0])
    assert {estimated(make_job(items), item) for item in items} == {per_item}
    job = make_job(items, token_limit=3 * per_item)
    with (
        _InFlightCheck(phase_seconds=0.05) as transport,
        BatchRunner("memory://", artifacts_url, provider=transport) as runner,
    ):
        run = runner.start(job, "by-tokens")
        assert drive(run).completed == 7
        assert batch_sizes(transport) == [3, 3, 1]
        # The three batches together exceed the limit: each waited for the one before.
        assert transport.live_at_create == [0, 0, 0]
        assert_exactly_once(transport)
        assert {r.attempts for r in run.results()} == {1}


def test_without_a_token_limit_batches_are_sent_together(artifacts_url: str) -> None:
    with (
        _InFlightCheck(phase_seconds=5.0) as transport,
        BatchRunner("memory://", artifacts_url, provider=transport) as runner,
    ):
        runner.start(make_job(make_items(7), max_requests=3), "no-budget")
        assert transport.live_at_create == [0, 1, 2]


def test_a_request_over_the_token_limit_fails_alone(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(4, text="review {i:03d}")
    items.append(BatchItem(item_id="long", payload={"text": "word " * 400}))
    per_item = estimated(make_job(items), items[0])
    run = runner.start(make_job(items, token_limit=4 * per_item), "over-tokens")
    assert drive(run).status is RunStatus.COMPLETED_WITH_FAILURES

    long = by_id(run)["long"]
    assert long.status is ItemStatus.FAILED
    assert long.error is not None
    assert long.error.error_class == "request_too_large"
    assert "enqueued_token_limit" in long.error.message
    assert batch_sizes(transport) == [4]
