"""A run ends with one typed result per item, joined back to its input, after exactly one
provider batch per batch key."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from batchor import ArtifactPolicy, BatchRunner, ItemStatus, JsonlItemSource, RunStatus, Usage
from batchor.testing import InProcessBatchTransport

from .helpers import (
    CREATE,
    Verdict,
    assert_exactly_once,
    batches_per_key,
    drive,
    line_fault_on,
    make_items,
    make_job,
)


def test_a_run_completes_with_typed_results_in_item_order(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(7)), "typed")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    assert (summary.completed, summary.failed, summary.total) == (7, 0, 7)
    results = list(run.results())
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(7)]
    for i, result in enumerate(results):
        assert result.status is ItemStatus.COMPLETED
        assert isinstance(result.output, Verdict)
        assert result.output == Verdict.model_validate_json(result.output_text or "")
        assert result.error is None
        assert result.attempts == 1
        assert result.metadata == {"row": i, "tag": f"t{i % 3}"}
        assert result.row == i
        assert result.source is None  # a plain iterable has no source identity
    assert_exactly_once(transport)
    assert transport.stats.batches_created == 1
    assert [b["status"] for b in transport.batches()] == ["completed"]


def test_usage_is_summed_from_the_items_into_batches_and_the_run(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(9), max_requests=4), "usage")
    summary = drive(run)

    per_item = [r.usage for r in run.results()]
    assert all(u is not None and u.input_tokens > 0 and u.output_tokens > 0 for u in per_item)
    total = Usage(
        sum(u.input_tokens for u in per_item if u), sum(u.output_tokens for u in per_item if u)
    )
    assert summary.usage == total
    infos = run.batches()
    assert [b.requests for b in infos] == [4, 4, 1]
    assert sum(b.usage.input_tokens for b in infos) == total.input_tokens
    assert sum(b.usage.output_tokens for b in infos) == total.output_tokens
    assert {b.status for b in infos} == {"collected"}
    assert {b.provider_status for b in infos} == {"completed"}
    assert summary.cost_usd is not None
    assert summary.cost_usd > 0
    # Each batch the run records is the provider batch created for its key, and no other.
    remote = {b["metadata"]["batchor_batch_key"]: b["id"] for b in transport.batches()}
    assert {b.batch_key: b.provider_batch_id for b in infos} == remote
    assert remote.keys() == batches_per_key(transport).keys()


def test_plain_text_replies_are_the_output(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.shuffle_output = True  # answers come back in any order
    run = runner.start(make_job(make_items(30), structured=None, max_requests=12), "text")
    assert drive(run).completed == 30

    for i, result in enumerate(run.results()):
        # Each reply is matched to its own item by its id, not by its line's position.
        assert result.output_text == f"Echo: review {i}"
        assert result.output == result.output_text
    assert_exactly_once(transport)
    assert transport.stats.batches_created == 3


def test_a_file_source_gives_each_result_its_source_and_row(
    runner: BatchRunner, transport: InProcessBatchTransport, tmp_path: Path
) -> None:
    path = tmp_path / "reviews.jsonl"
    rows = [{"id": f"r{i}", "text": f"review {i}", "shop": f"s{i % 2}"} for i in range(5)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    source = JsonlItemSource(path, id_field="id", metadata_fields=["shop"])

    run = runner.start(make_job(source), "from-file")
    assert drive(run).completed == 5

    results = list(run.results())
    assert [r.item_id for r in results] == [f"r{i}" for i in range(5)]
    assert [r.row for r in results] == [0, 1, 2, 3, 4]
    assert {r.source for r in results} == {str(path.resolve())}
    assert [r.metadata for r in results] == [{"shop": f"s{i % 2}"} for i in range(5)]
    assert_exactly_once(transport)


def test_an_empty_source_completes_without_a_provider_batch(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job([]), "empty")
    summary = drive(run)
    assert summary.status is RunStatus.COMPLETED
    assert summary.total == 0
    assert transport.stats.batches_created == 0
    assert transport.stats.calls[CREATE] == 0


def test_starting_a_finished_run_again_sends_nothing(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(6)
    first = runner.start(make_job(items, max_requests=2), "again")
    drive(first)
    calls = transport.stats.total_calls

    second = runner.start(make_job(items, max_requests=2), "again")
    assert second.summary().status is RunStatus.COMPLETED
    assert second.summary().completed == 6
    assert transport.stats.total_calls == calls
    assert transport.stats.batches_created == 3
    assert_exactly_once(transport)


def test_a_second_start_while_batches_are_in_flight_creates_nothing_twice(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(8)
    runner.start(make_job(items, max_requests=3), "twice")
    again = runner.start(make_job(items, max_requests=3), "twice")
    assert drive(again).completed == 8
    assert transport.stats.batches_created == 3
    assert_exactly_once(transport)


@pytest.mark.parametrize("phase_seconds", [0.15])
def test_each_refresh_follows_the_provider_status_of_live_batches(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(3)), "followed")
    assert [b.provider_status for b in run.batches()] == ["validating"]
    seen = set()
    deadline = time.monotonic() + 10
    while not run.refresh().is_terminal:
        assert time.monotonic() < deadline
        seen.add(run.batches()[0].provider_status)
        time.sleep(0.01)
    assert "in_progress" in seen
    assert seen <= {"validating", "in_progress", "finalizing", "completed"}
    assert [(b.status, b.provider_status) for b in run.batches()] == [("collected", "completed")]


def test_outcomes_are_applied_chunk_by_chunk(
    runner: BatchRunner, transport: InProcessBatchTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchor.engine.feed.CHUNK", 3)
    transport.faults.line_fault = line_fault_on(["review 4"], "bad_request")
    run = runner.start(make_job(make_items(10), max_attempts=1), "chunked")
    summary = drive(run)
    assert (summary.completed, summary.failed) == (9, 1)
    assert {r.attempts for r in run.results()} == {1}
    assert transport.stats.batches_created == 1


@pytest.mark.parametrize("keep", [True, False])
def test_raw_output_files_are_kept_only_if_the_job_says_so(
    runner: BatchRunner, transport: InProcessBatchTransport, keep: bool
) -> None:
    transport.faults.line_fault = line_fault_on(["review 1"], "bad_request")
    job = replace(make_job(make_items(3)), artifact_policy=ArtifactPolicy(keep_raw_outputs=keep))
    run = runner.start(job, "raw")
    drive(run)
    raw = sorted(
        key.rsplit("/", 1)[1]
        for key in runner.artifacts.keys("runs/raw/batches")
        if key.endswith(("output.jsonl", "errors.jsonl"))
    )
    assert raw == (["errors.jsonl", "output.jsonl"] if keep else [])
    assert [r.status for r in run.results()] == [
        ItemStatus.COMPLETED,
        ItemStatus.FAILED,
        ItemStatus.COMPLETED,
    ]
