"""``pause``, ``resume`` and ``cancel``: their effect on the run as status, list, wait and
results then show it, and one-line state errors (exit 2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchor.states import ItemStatus
from batchor.stores.sql import SqlStateStore
from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed, write_csv


def test_pause_then_status_and_list_show_it_paused_and_resume_finishes(
    tmp_path: Path, invoke: Invoke, slow_emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", ["r0", "r1", "r2"])
    assert invoke("start", "in.csv", *JOB, "--run-id", "p1").exit_code == 0

    paused = invoke("pause", "p1", "--reason", "maintenance window", "--json")
    assert paused.exit_code == 0, paused.stderr
    assert parsed(paused)["status"] == "paused"

    status = parsed(invoke("status", "p1", "--json"))
    assert (status["status"], status["pause_reason"]) == ("paused", "maintenance window")
    table = invoke("status", "p1")
    assert "paused" in table.stdout
    assert "maintenance window" in table.stdout
    [listed] = parsed(invoke("list", "--json"))
    assert (listed["run_id"], listed["status"]) == ("p1", "paused")

    assert invoke("pause", "p1").exit_code == 0  # pausing a paused run changes nothing

    resumed = invoke("resume", "p1", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert parsed(resumed)["status"] == "running"
    waited = invoke("wait", "p1", "--poll-interval", "0.05")
    assert waited.exit_code == 0, waited.stderr
    assert parsed(invoke("status", "p1", "--json"))["items"]["completed"] == 3


def test_cancel_marks_the_items_never_sent_cancelled(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    # The account is out of quota: the batch is never created and the run pauses itself.
    emulator.faults.create_insufficient_quota_count = 100
    write_csv(tmp_path / "in.csv", ["r0", "r1", "r2", "r3"])
    started = invoke("start", "in.csv", *JOB, "--run-id", "c1", "--json")
    assert started.exit_code == 0, started.stderr
    assert parsed(started)["status"] == "paused"

    cancelled = invoke("cancel", "c1", "--json")
    assert cancelled.exit_code == 0, cancelled.stderr
    summary = parsed(cancelled)
    assert summary["status"] == "cancelled"
    assert summary["items"]["cancelled"] == 4
    assert emulator.stats.batches_created == 0

    assert invoke("results", "c1", "--output", "out.jsonl").exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"cancelled"}
    assert invoke("wait", "c1").exit_code == 1  # a cancelled run is not a success


@pytest.fixture
def slower_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBatchEmulator]:
    """Batch phases of 2 s: the batch is still live when the cancel reaches it, even on a
    loaded machine (0.3 s phases can end before the CLI's next process starts)."""
    with OpenAIBatchEmulator(phase_seconds=2.0) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        yield emu


def test_cancel_remote_stops_the_batch_at_the_provider(
    tmp_path: Path, invoke: Invoke, slower_emulator: OpenAIBatchEmulator
) -> None:
    slow_emulator = slower_emulator
    write_csv(tmp_path / "in.csv", ["r0", "r1"])
    assert invoke("start", "in.csv", *JOB, "--run-id", "c2").exit_code == 0
    cancelling = invoke("cancel", "c2", "--remote", "--json")
    assert cancelling.exit_code == 0, cancelling.stderr
    assert parsed(cancelling)["status"] == "cancelling"
    assert slow_emulator.stats.calls[("POST", "/v1/batches/{id}/cancel")] == 1

    waited = invoke("wait", "c2", "--poll-interval", "0.05", "--json")
    assert waited.exit_code == 1, waited.stderr
    final = parsed(waited)
    assert final["status"] == "cancelled"
    assert final["items"]["cancelled"] == 2


def test_controls_a_state_forbids_are_one_line_and_exit_2(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", ["r0"])
    assert invoke("start", "in.csv", *JOB, "--run-id", "done").exit_code == 0
    assert invoke("wait", "done", "--poll-interval", "0.05").exit_code == 0

    assert "cannot pause run 'done': it is completed" in one_error_line(invoke("pause", "done"), 2)
    assert "cannot resume run 'done': it is completed" in one_error_line(
        invoke("resume", "done"), 2
    )
    assert "cannot cancel run 'done': it is completed" in one_error_line(
        invoke("cancel", "done", "--remote"), 2
    )
    for command in ("pause", "resume", "cancel"):
        assert "no run 'nope' in the store" in one_error_line(invoke(command, "nope"), 2)


def test_wait_with_no_terminal_counts_the_items_only_at_the_end(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counting a run's items scans them all; with no progress bars to draw (stderr is not a
    # terminal here), `wait` must not count them at every refresh.
    counted: list[int] = []
    count = SqlStateStore.item_counts

    def counting(self: SqlStateStore, run_pk: int) -> dict[ItemStatus, int]:
        counted.append(run_pk)
        return count(self, run_pk)

    write_csv(tmp_path / "in.csv", [f"r{i}" for i in range(6)])
    with OpenAIBatchEmulator(phase_seconds=1.0) as emulator:  # a batch out for seconds
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
        assert invoke("start", "in.csv", *JOB, "--run-id", "quiet").exit_code == 0
        monkeypatch.setattr(SqlStateStore, "item_counts", counting)
        waited = invoke("wait", "quiet", "--poll-interval", "0.05", "--json")
    assert waited.exit_code == 0, waited.stderr
    assert parsed(waited)["status"] == "completed"
    assert emulator.stats.calls[("GET", "/v1/batches/{id}")] >= 20  # many refreshes
    assert len(counted) <= 2, counted  # to tell the run is done, and for its summary
