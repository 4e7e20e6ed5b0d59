"""Finishing the stragglers (issue #19, `FinishSync`) against the emulator through the real
openai SDK and a real SQLite file: once few enough items are left in a batch the emulator
holds, that batch is cancelled once, the lines it answered are kept, and the rest are sent
through the synchronous endpoint, each exactly once; the summary's batch and synchronous
usage and costs add up to what the items billed. The same holds driven from a fresh
process and by two worker processes at once; the synchronous cap sends the rest in a
normal batch; a low rate limit is waited out."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    FinishSync,
    ItemStatus,
    ModelPrice,
    OpenAIProviderConfig,
    Run,
    RunStatus,
    RunSummary,
    Usage,
)
from batchor.errors import ConfigurationError
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator
from batchor.testing.emulator.limits import EmulatorLimits
from tests.spies import count_item_counts

from .conftest import make_items, prompt
from .drivers import drive_in_processes

CANCEL = ("POST", "/v1/batches/{id}/cancel")
RETRIEVE = ("GET", "/v1/batches/{id}")
MODEL = "gpt-4.1-mini"
PRICES = {MODEL: ModelPrice(10.0, 20.0)}  # USD per million tokens
ITEMS, PER_BATCH = 30, 10
HELD_ANSWERED = PER_BATCH // 2  # the held batch answers half of its lines
STRAGGLERS = PER_BATCH - HELD_ANSWERED


def _runner(store: str, tmp_path: Path) -> BatchRunner:
    return BatchRunner(store, tmp_path / "artifacts", prices=PRICES)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[BatchRunner]:
    with _runner(f"sqlite:///{tmp_path}/store/batchor.db", tmp_path) as r:
        yield r


def _job(
    emu: OpenAIBatchEmulator,
    *,
    n: int = ITEMS,
    per_batch: int = PER_BATCH,
    at_most: int = PER_BATCH,
    after: float = 0.3,
    cap: float | None = None,
    deadline: float | None = None,
    concurrency: int = 8,
    grace: float = 60.0,
) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model=MODEL, base_url=emu.base_url, api_key=emu.api_key
        ),
        limits=BatchLimits(max_requests=per_batch),
        deadline=None if deadline is None else timedelta(seconds=deadline),
        finish_sync=FinishSync(
            when_remaining_at_most=at_most,
            after=timedelta(seconds=after),
            max_cost_usd=cap,
            max_concurrency=concurrency,
            cancel_grace=timedelta(seconds=grace),
        ),
    )


def _wait(run: Run, timeout: float = 60) -> RunSummary:
    return run.wait(timeout, poll_interval=0.05, max_poll_interval=0.25)


def _batch_billed(emu: OpenAIBatchEmulator) -> tuple[int, int]:
    """The tokens the provider billed over every batch (answered lines only)."""
    batches = emu.batches()
    return (
        sum(b["usage"]["input_tokens"] for b in batches),
        sum(b["usage"]["output_tokens"] for b in batches),
    )


def _cost(tokens: tuple[int, int]) -> float:
    """What these tokens cost at the table's (batch) price."""
    return PRICES[MODEL].cost(Usage(*tokens))


def _check_finished(
    emu: OpenAIBatchEmulator, runner: BatchRunner, summary: RunSummary, *, n: int = ITEMS
) -> None:
    """The held batch was cancelled once; every item completed exactly once, on its first
    attempt, the stragglers through the synchronous endpoint; batch and synchronous usage
    and costs add up to what the items billed."""
    assert summary.status is RunStatus.COMPLETED
    assert emu.stats.calls[CANCEL] == 1
    statuses = Counter(b["status"] for b in emu.batches())
    assert statuses["cancelled"] == 1
    assert emu.stats.batches_created == n // PER_BATCH  # no batch for the stragglers
    batch_lines = emu.stats.lines_answered
    sync_sent = sum(emu.stats.sync_answered.values())
    assert set(batch_lines.values()) == {1}
    assert sum(batch_lines.values()) == n - STRAGGLERS
    assert sync_sent == STRAGGLERS == summary.sync_answered
    assert summary.duplicate_answers == 0
    results = list(runner.get_run(summary.run_id).results())
    assert [r.status for r in results] == [ItemStatus.COMPLETED] * n
    assert {r.attempts for r in results} == {1}
    # Usage: the batches' as the provider billed them, the synchronous requests' apart.
    assert (summary.usage.input_tokens, summary.usage.output_tokens) == _batch_billed(emu)
    sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
    assert sync == emu.stats.sync_tokens
    items_in = sum(r.usage.input_tokens for r in results if r.usage is not None)
    items_out = sum(r.usage.output_tokens for r in results if r.usage is not None)
    assert (items_in, items_out) == (
        summary.usage.input_tokens + sync[0],
        summary.usage.output_tokens + sync[1],
    )
    # Costs: the batches at the batch price, the synchronous requests at twice it.
    assert summary.cost_usd == pytest.approx(_cost(_batch_billed(emu)))
    assert summary.sync_cost_usd == pytest.approx(2 * _cost(sync))
    assert summary.sync_cost_usd is not None
    assert summary.sync_cost_usd > 0


def test_the_stragglers_of_a_held_batch_are_answered_synchronously_once(
    runner: BatchRunner,
) -> None:
    faults = EmulatorFaults(hold_count=1)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        run = runner.start(_job(emu), "finish")
        summary = _wait(run)
        _check_finished(emu, runner, summary)
        held = emu.batches()[0]
        assert held["status"] == "cancelled"
        assert held["request_counts"]["completed"] == HELD_ANSWERED
        assert {b.status for b in run.batches()} == {"collected"}


def test_a_run_with_more_items_in_flight_than_finishing_takes_is_not_counted_at_each_step(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Telling whether to finish counts the run's items (a scan of them all): only once few
    # enough could be left in flight, not at every step of every worker waiting on batches
    # that hold more.
    with OpenAIBatchEmulator(phase_seconds=0.1) as emu:
        run = runner.start(_job(emu, at_most=PER_BATCH // 2), "far")
        counted = count_item_counts(monkeypatch, runner.store)
        summary = _wait(run)
        assert (summary.status, summary.completed) == (RunStatus.COMPLETED, ITEMS)
        assert emu.stats.calls[RETRIEVE] >= 5  # many steps while the batches ran
        assert sum(emu.stats.sync_answered.values()) == 0  # never due
        # Once to tell that the run is done, once for the summary wait returns.
        assert len(counted) == 2


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["fresh-process", "two-workers"])
def test_the_stragglers_are_finished_once_from_fresh_processes(
    store_url: str, tmp_path: Path, workers: int
) -> None:
    faults = EmulatorFaults(hold_count=1)
    with (
        OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu,
        _runner(store_url, tmp_path) as runner,
    ):
        runner.start(_job(emu), "finish")  # created and submitted here
        finals = drive_in_processes(
            emu, store_url, tmp_path, "finish", workers, prices={MODEL: (10.0, 20.0)}
        )
        assert {s["status"] for s in finals} == {"completed"}
        assert {s["sync_answered"] for s in finals} == {STRAGGLERS}
        # Each straggler was sent once: the endpoint answered exactly that many requests.
        assert emu.stats.sync_answered == {"/v1/responses": STRAGGLERS}
        _check_finished(emu, runner, runner.get_run("finish").summary())


class _HoldLast(EmulatorFaults):
    """Holds the ``last``-th batch created (1-based) for ever: it answers `hold_fraction`
    of its lines and stays ``in_progress`` until it is cancelled."""

    def __init__(self, last: int, fraction: float) -> None:
        super().__init__(hold_fraction=fraction)
        self.last = last
        self.created = 0

    def take_batch_outcome(self) -> Any:
        self.created += 1
        return "hold" if self.created == self.last else super().take_batch_outcome()


@pytest.mark.slow
def test_a_100k_run_whose_last_batch_is_held_for_ever_finishes_within_its_deadline(
    runner: BatchRunner,
) -> None:
    n, per_batch, fraction = 100_000, 10_000, 0.9
    stragglers = per_batch - int(per_batch * fraction)
    faults = _HoldLast(n // per_batch, fraction)
    deadline = 120.0
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        started = time.monotonic()
        job = _job(emu, n=n, per_batch=per_batch, at_most=per_batch, after=1.0, deadline=deadline)
        run = runner.start(job, "big")
        summary = _wait(run, timeout=deadline)
        took = time.monotonic() - started
        assert summary.status is RunStatus.COMPLETED
        assert took < deadline
        assert summary.deadline_failed == 0
        assert emu.stats.calls[CANCEL] == 1
        assert emu.stats.batches_created == n // per_batch
        batch_lines = emu.stats.lines_answered
        assert set(batch_lines.values()) == {1}
        assert sum(batch_lines.values()) == n - stragglers
        assert sum(emu.stats.sync_answered.values()) == stragglers == summary.sync_answered
        assert summary.items[ItemStatus.COMPLETED] == n
        results = list(run.results())
        assert len({r.item_id for r in results}) == n
        assert {r.attempts for r in results} == {1}
        sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
        assert sync == emu.stats.sync_tokens
        assert (summary.usage.input_tokens, summary.usage.output_tokens) == _batch_billed(emu)
        items_in = sum(r.usage.input_tokens for r in results if r.usage is not None)
        items_out = sum(r.usage.output_tokens for r in results if r.usage is not None)
        assert items_in == summary.usage.input_tokens + sync[0]
        assert items_out == summary.usage.output_tokens + sync[1]
        assert summary.cost_usd is not None
        assert summary.sync_cost_usd is not None
        assert summary.cost_usd + summary.sync_cost_usd == pytest.approx(
            _cost(_batch_billed(emu)) + 2 * _cost(sync)
        )
        print(f"100k run with finish_sync: {took:.1f} s")


def test_the_synchronous_cap_sends_the_rest_in_a_normal_batch(runner: BatchRunner) -> None:
    cap = 0.007  # about two requests at the standard price (each projected at ~$0.003)
    faults = EmulatorFaults(hold_count=1)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        job = _job(emu, cap=cap)
        config = OpenAIProviderConfig(
            model=MODEL,
            base_url=emu.base_url,
            api_key=emu.api_key,
            request_params={"max_output_tokens": 64},
        )
        job = BatchJob(
            items=job.items,
            build_prompt=prompt,
            provider_config=config,
            limits=job.limits,
            finish_sync=job.finish_sync,
        )
        summary = _wait(runner.start(job, "capped"))
        assert summary.status is RunStatus.COMPLETED
        sent = sum(emu.stats.sync_answered.values())
        assert 1 <= sent < STRAGGLERS
        assert summary.sync_answered == sent
        assert summary.sync_cost_usd is not None
        assert summary.sync_cost_usd <= cap
        # The rest went out in one more, normal batch.
        assert emu.stats.batches_created == ITEMS // PER_BATCH + 1
        assert emu.batches()[-1]["request_counts"]["total"] == STRAGGLERS - sent
        results = list(runner.get_run("capped").results())
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * ITEMS
        assert {r.attempts for r in results} == {1}
        assert set(emu.stats.lines_answered.values()) == {1}


def test_a_low_rate_limit_is_waited_out(runner: BatchRunner) -> None:
    faults = EmulatorFaults(hold_count=1)
    limits = EmulatorLimits(requests_per_minute=2, rate_window=1.0)  # 2 requests a second
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults, limits=limits) as emu:
        summary = _wait(runner.start(_job(emu), "limited"))
        assert emu.stats.sync_rate_limited > 0  # 429s were answered...
        _check_finished(emu, runner, summary)  # ...and waited out, each item sent once


def test_finish_sync_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="when_remaining_at_most"):
        FinishSync(0, timedelta(minutes=1))
    with pytest.raises(ConfigurationError, match=r"FinishSync\.after"):
        FinishSync(10, timedelta(0))
    with pytest.raises(ConfigurationError, match=r"FinishSync\.max_cost_usd"):
        FinishSync(10, timedelta(minutes=1), max_cost_usd=-1)
    with pytest.raises(ConfigurationError, match=r"FinishSync\.max_concurrency"):
        FinishSync(10, timedelta(minutes=1), max_concurrency=0)


def test_finish_sync_is_refused_for_a_provider_that_cannot_send_synchronously(
    tmp_path: Path,
) -> None:
    from batchor import AnthropicProviderConfig
    from batchor.providers.anthropic.transport import AnthropicTransport

    class _BatchOnly(AnthropicTransport):
        sync_requests = False  # a transport of the Message Batches API alone

    transport = _BatchOnly(api_key="k", base_url="http://127.0.0.1:9")
    runner = BatchRunner(f"sqlite:///{tmp_path}/store/batchor.db", tmp_path, provider=transport)
    job = BatchJob(
        items=make_items(3),
        build_prompt=prompt,
        provider_config=AnthropicProviderConfig(
            model="claude-haiku-4-5", max_tokens=64, api_key="k", base_url="http://127.0.0.1:9"
        ),
        finish_sync=FinishSync(10, timedelta(minutes=1)),
    )
    with runner, pytest.raises(ConfigurationError, match="finish_sync") as info:
        runner.start(job, "anthropic")
    assert "\n" not in str(info.value)
    assert runner.store.get_run("anthropic") is None


def test_a_stopped_batch_slow_to_end_is_taken_over_and_its_late_lines_are_duplicates(
    runner: BatchRunner,
) -> None:
    # The held batch stays cancelling for 3 s: still cancelling when the 0.1 s grace has
    # passed, so all its items go synchronously, and the lines it had answered arrive
    # afterwards: duplicates, billed but not applied.
    faults = EmulatorFaults(hold_count=1, cancelling_seconds=3.0)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        summary = _wait(runner.start(_job(emu, grace=0.1), "slow-cancel"))
        assert summary.status is RunStatus.COMPLETED
        assert emu.stats.calls[CANCEL] == 1
        assert sum(emu.stats.sync_answered.values()) == PER_BATCH == summary.sync_answered
        assert summary.duplicate_answers == HELD_ANSWERED
        results = list(runner.get_run("slow-cancel").results())
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * ITEMS
        assert {r.attempts for r in results} == {1}
        # The batch usage holds the duplicates' tokens (billed), the items only what applied.
        assert (summary.usage.input_tokens, summary.usage.output_tokens) == _batch_billed(emu)
        sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
        assert sync == emu.stats.sync_tokens
        held = next(b for b in emu.batches() if b["status"] == "cancelled")["usage"]
        items_in = sum(r.usage.input_tokens for r in results if r.usage is not None)
        items_out = sum(r.usage.output_tokens for r in results if r.usage is not None)
        assert items_in == summary.usage.input_tokens - held["input_tokens"] + sync[0]
        assert items_out == summary.usage.output_tokens - held["output_tokens"] + sync[1]


class Label(BaseModel):
    """A structured reply."""

    label: str


def test_a_synchronous_reply_that_fails_validation_charges_an_attempt_and_goes_again(
    runner: BatchRunner,
) -> None:
    # The held batch is the first: it answers seqs 1-5 (item-0 to item-4); seqs 6-10 are the
    # stragglers. Seq 7's (item-6's) first synchronous answer (not a line the batch worker
    # thread renders) is not valid JSON.
    faulted: Counter[str] = Counter()

    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        if custom_id != "7" or threading.current_thread().name == "batch-emulator-worker":
            return None
        faulted[custom_id] += 1
        return "invalid_json" if faulted[custom_id] == 1 else None

    faults = EmulatorFaults(hold_count=1, line_fault=fault)
    with OpenAIBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        base = _job(emu)
        job = BatchJob(
            items=base.items,
            build_prompt=prompt,
            provider_config=base.provider_config,
            limits=base.limits,
            structured_output=Label,
            finish_sync=base.finish_sync,
        )
        summary = _wait(runner.start(job, "validated"))
        assert summary.status is RunStatus.COMPLETED
        assert faulted["7"] == 2  # sent synchronously twice: the bad reply, then a good one
        results = {r.item_id: r for r in runner.get_run("validated").results()}
        assert all(r.status is ItemStatus.COMPLETED for r in results.values())
        assert {k: r.attempts for k, r in results.items() if r.attempts != 1} == {"item-6": 2}
        assert isinstance(results["item-6"].output, Label)
        assert summary.sync_answered == STRAGGLERS
