"""The trigger waits without a key and without blocking the event loop, and cancelling on
kill (trigger or worker) is opt-in and stops the run's batches at the provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchor import BatchItem, BatchJob, BatchLimits, BatchRunner, OpenAIProviderConfig, PromptParts
from batchor.testing import OpenAIBatchEmulator

pytest.importorskip("airflow")


def _job(n: int = 6) -> BatchJob:
    return BatchJob(
        items=[BatchItem(item_id=f"i-{k}", payload={"text": f"item {k}"}) for k in range(n)],
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        limits=BatchLimits(max_requests=3),
    )


@pytest.fixture
def slow_emulator() -> Iterator[OpenAIBatchEmulator]:
    """An emulator whose batches stay in flight for a minute."""
    with OpenAIBatchEmulator(phase_seconds=20) as emu:
        yield emu


@pytest.fixture
def started(slow_emulator: OpenAIBatchEmulator, tmp_path: Path) -> dict[str, str]:
    """A run with two batches in flight; where it lives."""
    where = {"store": f"sqlite:///{tmp_path}/b.db", "artifacts": str(tmp_path / "art")}
    with BatchRunner(
        **where, api_key=slow_emulator.api_key, base_url=slow_emulator.base_url
    ) as runner:
        runner.start(_job(), run_id="run-1")
    return where


def _connection(monkeypatch: pytest.MonkeyPatch, emulator: Any, where: dict[str, str]) -> None:
    conn = {
        "conn_type": "openai",
        "host": emulator.base_url,
        "password": emulator.api_key,
        "extra": {"batchor_store": where["store"], "batchor_artifacts": where["artifacts"]},
    }
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))


async def _run_with_ticks(trigger: Any) -> tuple[list[dict[str, Any]], int]:
    """The trigger's events, and how often another coroutine ran meanwhile."""
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    events = [event.payload async for event in trigger.run()]
    stop.set()
    await ticker
    return events, ticks


def test_trigger_wakes_the_task_without_calling_the_provider(
    started: dict[str, str], slow_emulator: OpenAIBatchEmulator
) -> None:
    from batchor_airflow import BatchorRunTrigger

    calls = slow_emulator.stats.total_calls
    trigger = BatchorRunTrigger("run-1", **started, poll_interval=0.5, check_interval=0.1)
    events, ticks = asyncio.run(_run_with_ticks(trigger))

    assert events == [{"run_id": "run-1", "status": "running", "reason": "poll"}]
    assert slow_emulator.stats.total_calls == calls  # store reads only, no key needed
    assert ticks >= 20  # the event loop kept running while the store was read


def test_trigger_fires_at_once_for_a_terminal_run(openai_emulator, tmp_path: Path) -> None:
    from batchor_airflow import BatchorRunTrigger

    where = {"store": f"sqlite:///{tmp_path}/b.db", "artifacts": str(tmp_path / "art")}
    with BatchRunner(
        **where, api_key=openai_emulator.api_key, base_url=openai_emulator.base_url
    ) as runner:
        runner.run_and_wait(_job(), run_id="done-1", timeout=60)
    trigger = BatchorRunTrigger("done-1", **where, poll_interval=3600)
    events, _ = asyncio.run(_run_with_ticks(trigger))
    assert events == [{"run_id": "done-1", "status": "completed", "reason": "terminal"}]


def test_trigger_reports_a_missing_run_as_an_error_event(tmp_path: Path) -> None:
    from batchor_airflow import BatchorRunTrigger

    trigger = BatchorRunTrigger(
        "nope", store=f"sqlite:///{tmp_path}/b.db", artifacts=str(tmp_path), poll_interval=60
    )
    (event,) = asyncio.run(_run_with_ticks(trigger))[0]
    assert event["reason"] == "error"
    assert "RunNotFoundError" in event["message"]


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_trigger_on_kill_cancels_only_when_asked(
    started: dict[str, str],
    slow_emulator: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
    cancel_on_kill: bool,
) -> None:
    from batchor_airflow import BatchorRunTrigger

    _connection(monkeypatch, slow_emulator, started)  # the key comes from the connection
    asyncio.run(BatchorRunTrigger("run-1", cancel_on_kill=cancel_on_kill).on_kill())

    statuses = {b["status"] for b in slow_emulator.batches()}
    with BatchRunner(**started) as runner:
        run_status = runner.get_run("run-1").summary().status.value
    if cancel_on_kill:
        assert statuses <= {"cancelling", "cancelled"}
        assert run_status in {"cancelling", "cancelled"}
    else:
        assert statuses.isdisjoint({"cancelling", "cancelled"})
        assert run_status == "running"


def test_worker_on_kill_cancels_the_live_run(
    started: dict[str, str], slow_emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchor_airflow import BatchorRunOperator

    _connection(monkeypatch, slow_emulator, started)
    op = BatchorRunOperator(task_id="t", job=_job, destination="out.jsonl", cancel_on_kill=True)
    op.on_kill()  # killed before it started a run: nothing to cancel
    op._live_run_id = "run-1"  # what execute() records once it knows its run
    op.on_kill()

    assert {b["status"] for b in slow_emulator.batches()} <= {"cancelling", "cancelled"}
