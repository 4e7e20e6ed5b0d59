"""``--finish-sync-at`` and ``--finish-sync-after`` on ``run`` and ``start``: they reach the
run as its `FinishSync`, a run's last items held in a batch are answered synchronously, and
bad values are one line naming the option, against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchor import BatchRunner
from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed, write_csv

IDS = [f"r{k}" for k in range(12)]


def _stored_finish_sync(run_id: str) -> object:
    with BatchRunner("sqlite:///.batchor/batchor.db", ".batchor/artifacts") as runner:
        record = runner.store.get_run(run_id)
    assert record is not None
    return record.config["finish_sync"]


def test_start_stores_the_options(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    started = invoke(
        "start", "in.csv", *JOB, "--run-id", "f1", "--json",
        "--finish-sync-at", "50", "--finish-sync-after", "10m",
    )  # fmt: skip
    assert started.exit_code == 0, started.stderr
    stored = _stored_finish_sync("f1")
    assert isinstance(stored, dict)
    assert (stored["when_remaining_at_most"], stored["after"]) == (50, 600.0)
    write_csv(tmp_path / "in2.csv", IDS)
    default = invoke("start", "in2.csv", *JOB, "--run-id", "f2", "--finish-sync-at", "5")
    assert default.exit_code == 0, default.stderr
    stored = _stored_finish_sync("f2")
    assert isinstance(stored, dict)
    assert stored["after"] == 900.0  # 15 minutes by default


def test_run_finishes_a_held_batch_synchronously(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    emulator.faults.hold_count = 1  # the one batch answers half its lines, then waits
    write_csv(tmp_path / "in.csv", IDS)
    ran = invoke(
        "run", "in.csv", *JOB, "--run-id", "f3", "--json", "--poll-interval", "0.05",
        "--finish-sync-at", "12", "--finish-sync-after", "0.2s",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    summary = parsed(ran)
    assert summary["status"] == "completed"
    assert summary["sync_answered"] == len(IDS) // 2
    assert sum(emulator.stats.sync_answered.values()) == len(IDS) // 2
    table = invoke("status", "f3").stdout
    assert "answered synchronously" in table
    assert "synchronous cost" in table
    assert "failed at the deadline" not in table  # rows only for what applies


@pytest.mark.parametrize(
    "args",
    [
        ["--finish-sync-at", "0"],
        ["--finish-sync-at", "ten"],
        ["--finish-sync-at", "5", "--finish-sync-after", "0s"],
    ],
)
@pytest.mark.parametrize("command", ["run", "start"])
def test_a_bad_value_is_one_line_naming_the_option(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator, command: str, args: list[str]
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    result = invoke(command, "in.csv", *JOB, "--run-id", "bad", *args)
    assert "'--finish-sync-" in one_error_line(result, 2)
    assert emulator.stats.total_calls == 0


def test_after_without_at_is_refused(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    result = invoke("start", "in.csv", *JOB, "--run-id", "bad", "--finish-sync-after", "5m")
    assert "--finish-sync-at" in one_error_line(result, 2)
    assert emulator.stats.total_calls == 0
