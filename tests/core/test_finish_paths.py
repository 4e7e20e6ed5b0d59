"""Finishing the stragglers when the synchronous path misbehaves: a request that gets no
answer, a refused key, an answer that is not the item's, a cancel that fails. The real
OpenAI transport talks to the emulator; the faults are injected at the transport port, the
way the provider would show them (as test_failures does for uploads)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    FinishSync,
    ItemStatus,
    ModelPrice,
    OpenAIProviderConfig,
    RunStatus,
)
from batchor.engine import sync_send
from batchor.errors import ProviderAuthError
from batchor.providers.base import ProviderBatch, SyncResult, TransientProviderError
from batchor.providers.openai.transport import OpenAITransport
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import make_items, prompt

MODEL = "gpt-4.1-mini"
ELSEWHERE = "elsewhere:1:1-1"  # a worker on another host
CANCEL = ("POST", "/v1/batches/{id}/cancel")
N, HELD = 10, 5  # one batch, held with half its lines answered


class _Faulty(OpenAITransport):
    """The real transport; the calls named in ``faults`` fail (in order) before reaching
    the provider: ``"transient"`` (no answer), ``"refused"`` (the key refused),
    ``"foreign"`` (an answer for another request), ``"cancel"`` (the cancel call fails),
    ``"slow"`` (the answer comes after the pauses of ``slow``, each followed by its call)."""

    def __init__(self, emu: OpenAIBatchEmulator, faults: list[str]) -> None:
        super().__init__(api_key=emu.api_key, base_url=emu.base_url)
        self.faults = faults
        self.sync_calls = 0
        self.slow: list[tuple[float, Callable[[], object]]] = []

    def send_sync(self, request_line: bytes) -> SyncResult:
        self.sync_calls += 1
        fault = self.faults.pop(0) if self.faults and self.faults[0] != "cancel" else None
        if fault == "slow":
            for seconds, then in self.slow:
                time.sleep(seconds)
                then()
        if fault == "transient":
            raise TransientProviderError("provider unreachable: connection reset")
        if fault == "refused":
            raise ProviderAuthError("the provider refused the API key")
        answer = super().send_sync(request_line)
        if fault == "foreign":
            return SyncResult(answer.line.replace(b'"custom_id":"', b'"custom_id":"9', 1), 0.0)
        return answer

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        if self.faults and self.faults[0] == "cancel":
            self.faults.pop(0)
            raise TransientProviderError("provider unreachable: cancel timed out")
        return super().cancel_batch(batch_id)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store/batchor.db"


def _job(emu: OpenAIBatchEmulator, *, grace: float = 60.0) -> BatchJob:
    return BatchJob(
        items=make_items(N),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model=MODEL, base_url=emu.base_url, api_key=emu.api_key
        ),
        limits=BatchLimits(max_requests=N),
        finish_sync=FinishSync(
            when_remaining_at_most=N,
            after=timedelta(seconds=0.1),
            max_concurrency=1,
            cancel_grace=timedelta(seconds=grace),
        ),
    )


def _runner(store: str, tmp_path: Path, transport: OpenAITransport) -> BatchRunner:
    prices = {MODEL: ModelPrice(10.0, 20.0)}
    return BatchRunner(store, tmp_path / "artifacts", prices=prices, provider=transport)


@pytest.mark.parametrize(
    ("fault", "charged"),
    [("transient", 1), ("foreign", 1), ("refused", 0)],
    ids=["no-answer", "foreign-answer", "key-refused"],
)
def test_a_failed_synchronous_request_is_charged_or_held_and_every_item_ends_once(
    store: str, tmp_path: Path, fault: str, charged: int
) -> None:
    """No answer, or an answer that is not the item's: the item is charged an attempt and
    sent again. A refused key: nothing is charged, sending stops for this step and the item
    goes back to wait for the next one."""
    with OpenAIBatchEmulator(faults=EmulatorFaults(hold_count=1)) as emu:
        transport = _Faulty(emu, [fault])
        with _runner(store, tmp_path, transport) as runner:
            summary = runner.start(_job(emu), "paths").wait(
                30, poll_interval=0.05, max_poll_interval=0.2
            )
            results = list(runner.get_run("paths").results())
        assert summary.status is RunStatus.COMPLETED
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * N
        attempts = Counter(r.attempts for r in results)
        assert attempts == Counter({1: N - charged, 2: charged} if charged else {1: N})
        assert summary.sync_answered == N - HELD
        # One request more than the stragglers: the faulted one, sent again. It reached the
        # provider only when its answer came back as another request's.
        assert transport.sync_calls == N - HELD + 1
        sent = sum(emu.stats.sync_answered.values())
        assert sent == N - HELD + (1 if fault == "foreign" else 0)
        assert emu.stats.calls[CANCEL] == 1


def test_a_failed_cancel_leaves_the_stragglers_to_the_grace_and_counts_duplicates(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stopping worker's cancel fails: past the grace the batch's unanswered items are
    sent synchronously anyway; the cancel is sent again once the stop's lease has passed,
    and the lines the batch had answered arrive as duplicate answers, not applied twice."""
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "0.5")
    with OpenAIBatchEmulator(faults=EmulatorFaults(hold_count=1)) as emu:
        transport = _Faulty(emu, ["cancel"])
        with _runner(store, tmp_path, transport) as runner:
            summary = runner.start(_job(emu, grace=0.1), "grace").wait(
                30, poll_interval=0.05, max_poll_interval=0.2
            )
            results = list(runner.get_run("grace").results())
        assert summary.status is RunStatus.COMPLETED
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * N
        assert {r.attempts for r in results} == {1}
        assert emu.stats.calls[CANCEL] == 1  # the first never reached the provider
        assert summary.sync_answered == N  # every item was taken out of the batch
        assert summary.duplicate_answers == HELD
        assert sum(emu.stats.lines_answered.values()) == HELD


def test_a_synchronous_request_slower_than_the_lease_keeps_the_claim(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender renews its claim while a request is out: a worker elsewhere that tries to
    take sending over once a lease has passed is refused, and nothing is sent twice."""
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "1.5")
    with OpenAIBatchEmulator(faults=EmulatorFaults(hold_count=1)) as emu:
        transport = _Faulty(emu, ["slow"])
        taken_over: list[bool] = []
        with _runner(store, tmp_path, transport) as runner:
            run = runner.start(_job(emu), "slow-sync")
            pk = run._ctx.run.pk
            grab = lambda: taken_over.append(runner.store.claim_sync(pk, ELSEWHERE, 1.5))  # noqa: E731
            transport.slow = [(4.0, grab)]  # over two and a half leases
            summary = run.wait(30, poll_interval=0.05, max_poll_interval=0.2)
            results = list(runner.get_run("slow-sync").results())
        assert taken_over == [False]
        assert summary.status is RunStatus.COMPLETED
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * N
        assert {r.attempts for r in results} == {1}
        assert summary.sync_answered == N - HELD
        assert transport.sync_calls == N - HELD  # each straggler sent once
        assert sum(emu.stats.sync_answered.values()) == N - HELD


def test_a_sender_that_lost_its_claim_waits_quietly_and_leaves_the_items_to_the_new_holder(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending taken over mid-request (the holder stalled past its lease): the old holder
    stops, waits for its request without spinning, and neither applies its answer nor hands
    anything back; the answer's tokens still count as billed. The item is sent again, and
    answered once."""
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "1.5")
    waits = []
    real_wait = sync_send.wait

    def counted(*args: Any, **kwargs: Any) -> Any:
        waits.append(time.monotonic())
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(sync_send, "wait", counted)
    with OpenAIBatchEmulator(faults=EmulatorFaults(hold_count=1)) as emu:
        transport = _Faulty(emu, ["slow"])
        taken_over: list[bool] = []
        with _runner(store, tmp_path, transport) as runner:
            run = runner.start(_job(emu), "lost-sync")
            pk = run._ctx.run.pk

            def grab() -> None:  # as a worker that found the holder's process gone
                holder = runner.store.get_run("lost-sync")
                assert holder is not None
                taken_over.append(
                    runner.store.claim_sync(pk, ELSEWHERE, 0.5, steal_from=holder.sync_owner)
                )
                # The new holder takes the items (the one in flight is pending again), and
                # then stalls in its turn: they come back to the first worker after its lease.
                assert runner.store.claim_sync_items(pk, N)

            transport.slow = [(0.2, grab), (2.0, lambda: None)]
            summary = run.wait(30, poll_interval=0.05, max_poll_interval=0.2)
            results = list(runner.get_run("lost-sync").results())
        assert taken_over == [True]
        assert summary.status is RunStatus.COMPLETED
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * N
        assert {r.attempts for r in results} == {1}  # the lost answer charged nothing
        assert summary.sync_answered == N - HELD
        assert transport.sync_calls == N - HELD + 1  # the taken-over item, sent again
        assert sum(emu.stats.sync_answered.values()) == N - HELD + 1
        sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
        assert sync == emu.stats.sync_tokens  # both of its requests billed
        # About one wake per third of a lease while the request was out, not a spin.
        assert len(waits) < 50, len(waits)
