"""Pause, resume and cancel wind a run down or up as promised, and any handle on a run (one
from `start`, or one `get_run` makes from the store alone) drives it to the same end."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from batchor import (
    BatchRunner,
    BatchStatus,
    ConfigurationError,
    ItemStatus,
    RunNotFoundError,
    RunStateError,
    RunStatus,
    RunSummary,
    WaitTimeout,
)
from batchor.runner import job_codec
from batchor.stores.records import NewItem
from batchor.testing import InProcessBatchTransport
from tests.spies import count_item_counts

from .helpers import (
    CREATE,
    RETRIEVE,
    Verdict,
    assert_exactly_once,
    by_id,
    drive,
    line_fault_on,
    make_items,
    make_job,
    prompt,
)

CANCEL = ("POST", "/v1/batches/{id}/cancel")


def uploads(transport: InProcessBatchTransport) -> list[str]:
    return [f["id"] for f in transport.files() if f["purpose"] == "batch"]


@pytest.mark.parametrize("phase_seconds", [0.1])
def test_a_local_cancel_drops_unsent_batches_and_lets_live_ones_finish(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    items = make_items(6, text="review {i:03d}")
    per_item = job_codec(make_job(items)).estimate_tokens(prompt(items[0]))
    # Room for one batch of three at a time: the second waits, uploaded but not created.
    run = runner.start(make_job(items, max_requests=3, token_limit=3 * per_item), "cancel")
    assert [b.status for b in run.batches()] == ["submitted", "uploaded"]
    assert len(uploads(transport)) == 2

    run.cancel()
    final = drive(run)

    assert final.status is RunStatus.CANCELLED
    results = by_id(run)
    assert [results[f"item-{i}"].status for i in range(6)] == [ItemStatus.COMPLETED] * 3 + [
        ItemStatus.CANCELLED
    ] * 3
    assert [b["status"] for b in transport.batches()] == ["completed"]
    assert transport.stats.calls[CANCEL] == 0  # a local cancel stops nothing remote
    assert transport.stats.calls[CREATE] == 1
    assert transport.batches()[0]["input_file_id"] in uploads(transport)
    assert len(uploads(transport)) == 1  # the dropped batch's upload was deleted
    with pytest.raises(RunStateError, match="cannot resume"):
        run.resume()


@pytest.mark.parametrize("phase_seconds", [0.3])
def test_a_remote_cancel_stops_the_provider_batch_once(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(4)), "cancel-remote")
    run.cancel(remote=True)
    final = drive(run)

    assert final.status is RunStatus.CANCELLED
    assert final.items[ItemStatus.CANCELLED] == 4
    assert final.completed == 0
    assert [b["status"] for b in transport.batches()] == ["cancelled"]
    assert transport.stats.calls[CANCEL] == 1  # asked once, not at every refresh
    assert transport.stats.lines_answered == {}
    assert [b.status for b in run.batches()] == ["collected"]


@pytest.mark.parametrize("phase_seconds", [0.4])
def test_a_remote_cancel_keeps_the_lines_answered_before_it(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(300), structured=None), "cancel-midway")
    deadline = time.monotonic() + 10
    while transport.batches()[0]["request_counts"]["completed"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    run.cancel(remote=True)
    final = drive(run)

    assert final.status is RunStatus.CANCELLED
    answered = sum(transport.stats.lines_answered.values())
    assert 0 < answered < 300
    assert final.completed == answered  # each answered line paid for is kept
    assert final.items[ItemStatus.CANCELLED] == 300 - answered
    assert transport.stats.batches_created == 1


def test_a_finished_run_cannot_be_cancelled_and_cancelling_twice_is_harmless(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    done = runner.start(make_job(make_items(2)), "done")
    drive(done)
    with pytest.raises(RunStateError, match="cannot cancel"):
        done.cancel()
    assert done.summary().status is RunStatus.COMPLETED

    transport.faults.create_rate_limit_count = 100  # nothing gets created
    other = runner.start(make_job(make_items(2)), "cancelled-twice")
    assert other.cancel().status is RunStatus.CANCELLED
    assert other.cancel().status is RunStatus.CANCELLED
    assert other.summary().items[ItemStatus.CANCELLED] == 2
    assert transport.stats.batches_created == 1
    with pytest.raises(RunStateError, match="cannot pause"):
        other.pause()


def test_a_paused_run_sends_no_retry_until_resumed(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.line_fault = line_fault_on(["review 0"], "server_error", times=1)
    run = runner.start(make_job(make_items(3)), "paused")
    run.pause("maintenance window")
    # The batch in flight is still collected, but its failed item waits: nothing new is sent.
    with pytest.raises(RunStateError, match="maintenance window"):
        drive(run)
    summary = run.summary()
    assert summary.status is RunStatus.PAUSED
    assert summary.pause_reason == "maintenance window"
    assert (summary.completed, summary.items[ItemStatus.PENDING]) == (2, 1)
    assert transport.stats.batches_created == 1

    assert run.resume().status is RunStatus.RUNNING
    final = drive(run)
    assert final.status is RunStatus.COMPLETED
    assert by_id(run)["item-0"].attempts == 2
    assert transport.stats.batches_created == 2
    assert_exactly_once(transport)


def test_pausing_twice_keeps_the_first_reason_and_resuming_a_running_run_only_refreshes(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.create_rate_limit_count = 100
    run = runner.start(make_job(make_items(2)), "pause-twice")
    run.pause("first")
    assert run.pause("second").pause_reason == "first"
    run.resume()
    assert run.resume().status is RunStatus.RUNNING
    transport.faults.create_rate_limit_count = 0
    assert drive(run).completed == 2


def test_a_handle_from_the_store_alone_drives_the_run_to_its_end(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.line_fault = line_fault_on(["review 4"], "rate_limit", times=1)
    started = runner.start(make_job(make_items(8), max_requests=3), "rehydrated")

    other = runner.get_run("rehydrated")  # no job, no source: only the store
    summary = drive(other)
    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 8
    results = list(other.results())
    assert all(isinstance(r.output, Verdict) for r in results)  # the recorded model
    assert [r.metadata["row"] for r in results] == list(range(8))
    assert by_id(other)["item-4"].attempts == 2
    # The first handle sees the same end, and has nothing left to send.
    assert started.refresh().status is RunStatus.COMPLETED
    assert [r.output for r in started.results()] == [r.output for r in results]
    assert transport.stats.batches_created == 4
    assert_exactly_once(transport)


def test_two_handles_refreshing_in_turn_buy_each_batch_once(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    transport.faults.line_fault = line_fault_on(["review 1", "review 5"], "server_error", times=2)
    first = runner.start(make_job(make_items(6), max_requests=2), "in-turn")
    second = runner.get_run("in-turn")
    deadline = time.monotonic() + 20
    while not first.summary().is_terminal:
        assert time.monotonic() < deadline
        first.refresh()
        second.refresh()
    assert second.summary().completed == 6
    # Three first batches; the two retried items' second and third attempts go in one batch
    # each round, or one batch each when they end in different refreshes.
    assert 3 + 2 <= transport.stats.batches_created <= 3 + 4
    assert_exactly_once(transport)


def test_an_unknown_run_is_not_found(runner: BatchRunner) -> None:
    with pytest.raises(RunNotFoundError, match="nope"):
        runner.get_run("nope")


@pytest.mark.parametrize("phase_seconds", [0.1])
def test_wait_gives_up_at_its_timeout_and_the_run_goes_on(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(make_job(make_items(2)), "timeout")
    with pytest.raises(WaitTimeout) as caught:
        run.wait(0.05, poll_interval=0.01)
    assert caught.value.summary.status is RunStatus.RUNNING
    assert drive(run).completed == 2
    assert transport.stats.batches_created == 1


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"timeout": -1}, "timeout must be a number of seconds, 0 or more: -1"),
        ({"timeout": float("nan")}, "timeout must be"),
        ({"poll_interval": 0}, "poll_interval must be a number of seconds, more than 0: 0"),
        ({"max_poll_interval": float("inf")}, "max_poll_interval must be"),
        ({"progress_every": -0.5}, "progress_every must be a number of seconds, 0 or more"),
        ({"progress_every": True}, "progress_every must be"),
        ({"poll_interval": "1"}, "poll_interval must be"),
    ],
)
def test_wait_refuses_bad_arguments_before_it_refreshes(
    runner: BatchRunner,
    transport: InProcessBatchTransport,
    arguments: dict[str, object],
    named: str,
) -> None:
    run = runner.start(make_job(make_items(2)), "bad-wait")
    calls = sum(transport.stats.calls.values())
    with pytest.raises(ConfigurationError, match=f"^wait: {named}") as caught:
        run.wait(**arguments)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    assert sum(transport.stats.calls.values()) == calls  # nothing refreshed
    assert drive(run).completed == 2  # and the run is none the worse
    run.wait(0, poll_interval=30, max_poll_interval=30, progress_every=0)  # bounds allowed


@pytest.mark.parametrize("phase_seconds", [0.1])
def test_no_pause_of_wait_is_longer_than_max_poll_interval(runner: BatchRunner) -> None:
    run = runner.start(make_job(make_items(2)), "short-pauses")
    began = time.monotonic()
    # Any real number of seconds will do.
    summary = run.wait(30, poll_interval=60, max_poll_interval=Fraction(1, 50))
    assert summary.completed == 2
    assert time.monotonic() - began < 15  # not one pause of 30 s (the timeout's rest)


class _LeftOff(BaseException):
    """The starting worker stops here, as if killed (the run stays); its ingestion goes on
    elsewhere."""


@pytest.mark.parametrize("elsewhere", ["ingests", "ends items"])
def test_a_worker_waiting_out_an_ingestion_elsewhere_backs_off(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch, elsewhere: str
) -> None:
    monkeypatch.setattr("batchor.engine.ingest.SLICE_SIZE", 2)

    def leave(_: int) -> None:
        raise _LeftOff

    with pytest.raises(_LeftOff):
        runner.start(make_job(make_items(3)), "elsewhere", on_ingest=leave)
    record = runner.store.get_run("elsewhere")
    assert record is not None
    assert (record.ingest_complete, record.ingested_count) == (False, 2)
    seen: list[int] = []

    def another_slice_lands(summary: RunSummary) -> None:
        # The worker ingesting the run records one more slice between every two refreshes,
        # and cuts one more batch; or an item ends elsewhere each time (as when the last
        # items are answered synchronously, pass after pass).
        seen.append(sum(summary.items.values()))
        seq = 2 + len(seen)
        runner.store.open_batch(record.pk, f"cut-{seq}", "elsewhere:1:1", time.time() + 60)
        assert runner.store.add_items(
            record.pk,
            [NewItem(seq, f"more-{seq}", record.next_slice + len(seen), 0, 10, "0", 1, None)],
            next_slice=record.next_slice + len(seen) + 1,
            ingested_count=seq,
            checkpoint=None,
            complete=False,
        )
        if elsewhere == "ends items":
            runner.store.fail_pending(record.pk, [seq], "request_too_large", "too large")

    with pytest.raises(WaitTimeout):
        runner.get_run("elsewhere").wait(
            1.0, poll_interval=0.02, max_poll_interval=0.5, on_progress=another_slice_lands
        )
    assert seen == list(range(2, 2 + len(seen)))  # every refresh counted one item more
    forming = runner.get_run("elsewhere").summary().batches[BatchStatus.FORMING.value]
    assert forming == len(seen) + 1
    if elsewhere == "ingests":
        # Refreshes at 0, .02, .06, .14, .30, .62 s: the pause doubled all the same
        # (restarting it at every count would have counted the run's items some 40 times).
        assert 4 <= len(seen) <= 7
    else:  # an item ended at every refresh: the pause started again each time
        assert len(seen) >= 15


@pytest.mark.parametrize("phase_seconds", [0.1])
@pytest.mark.parametrize("reports", [False, True])
def test_a_worker_waiting_on_live_batches_counts_the_runs_items_only_to_end_the_run(
    runner: BatchRunner,
    transport: InProcessBatchTransport,
    monkeypatch: pytest.MonkeyPatch,
    reports: bool,
) -> None:
    # Counting a run's items scans them all (0.3 s at 1,000,000 items on Postgres): workers
    # waiting on live batches must not do it at every refresh, nor to report progress
    # more often than asked.
    runner.start(make_job(make_items(6), max_requests=2), "live")
    counted = count_item_counts(monkeypatch, runner.store)
    seen: list[RunSummary] = []
    summary = runner.get_run("live").wait(
        30,
        poll_interval=0.01,
        max_poll_interval=0.02,
        on_progress=seen.append if reports else None,
        progress_every=3600,
    )
    assert (summary.status, summary.completed) == (RunStatus.COMPLETED, 6)
    assert transport.stats.calls[RETRIEVE] >= 10  # it refreshed many times while batches ran
    # Once to tell that the run is done (no batch live, nothing open), once for the summary;
    # reporting, once more for the first report (the last is the final summary).
    assert len(counted) == (3 if reports else 2)
    if reports:
        assert [s.status for s in seen] == [RunStatus.RUNNING, RunStatus.COMPLETED]
        assert seen[-1] is summary
