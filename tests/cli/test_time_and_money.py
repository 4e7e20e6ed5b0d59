"""The time and money options of the CLI: ``--max-cost-usd``, ``--deadline`` and
``--batch-timeout`` on ``run`` and ``start``, ``resume --max-cost-usd``, and what ``status``
shows of them (time left, spend against the cap, the pause), against the emulator."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batchor import BatchRunner
from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed, write_csv

IDS = [f"r{k}" for k in range(12)]
CREATE = ("POST", "/v1/batches")


def _stored_config(run_id: str) -> dict[str, object]:
    with BatchRunner("sqlite:///.batchor/batchor.db", ".batchor/artifacts") as runner:
        record = runner.store.get_run(run_id)
    assert record is not None
    return dict(record.config)


def test_the_options_reach_the_run(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    before = time.time()
    started = invoke(
        "start", "in.csv", *JOB, "--run-id", "t1", "--json",
        "--max-cost-usd", "$2.50", "--deadline", "1h30m", "--batch-timeout", "45m",
    )  # fmt: skip
    assert started.exit_code == 0, started.stderr
    summary = parsed(started)
    assert summary["max_cost_usd"] == 2.5
    assert before + 5400 <= summary["deadline_at"] <= time.time() + 5400
    assert 5300 < summary["time_left_seconds"] <= 5400
    assert _stored_config("t1")["batch_timeout"] == 2700
    assert emulator.stats.calls[CREATE] == 1  # well under the cap: the batch went

    when = datetime.now(UTC) + timedelta(days=2)
    ran = invoke(
        "run", "in.csv", *JOB, "--run-id", "t2", "--json", "--poll-interval", "0.05",
        "--deadline", when.astimezone().isoformat(),
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert parsed(ran)["deadline_at"] == pytest.approx(when.timestamp(), abs=1e-3)
    assert parsed(ran)["max_cost_usd"] is None


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--max-cost-usd", "0"], "--max-cost-usd"),
        (["--max-cost-usd", "ten"], "--max-cost-usd"),
        (["--max-cost-usd", "nan"], "--max-cost-usd"),
        (["--deadline", "90"], "--deadline"),
        (["--deadline", "2030-01-01T12:00"], "--deadline"),  # no UTC offset
        (["--deadline", "tomorrow"], "--deadline"),
        (["--batch-timeout", "0m"], "--batch-timeout"),
        (["--batch-timeout", "2030-01-01T12:00Z"], "--batch-timeout"),
    ],
)
@pytest.mark.parametrize("command", ["run", "start"])
def test_a_bad_value_is_one_line_naming_the_option(
    tmp_path: Path,
    invoke: Invoke,
    emulator: OpenAIBatchEmulator,
    command: str,
    args: list[str],
    flag: str,
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    result = invoke(command, "in.csv", *JOB, "--run-id", "bad", *args)
    assert f"'{flag}'" in one_error_line(result, 2)
    assert emulator.stats.total_calls == 0
    assert not (tmp_path / ".batchor" / "batchor.db").exists()


def test_a_cap_on_a_model_batchor_cannot_price_is_refused(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    job = ["--id-field", "id", "--prompt-field", "text", "--model", "house-model"]
    result = invoke("start", "in.csv", *job, "--max-cost-usd", "5")
    message = one_error_line(result, 2)
    assert "--max-cost-usd" in message
    assert "'house-model'" in message
    assert emulator.stats.total_calls == 0


def test_status_shows_the_pause_time_left_and_spend_against_the_cap(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    started = invoke(
        "start", "in.csv", *JOB, "--run-id", "m1", "--json",
        "--max-cost-usd", "0.000001", "--deadline", "2h",
    )  # fmt: skip
    assert started.exit_code == 0, started.stderr
    assert parsed(started)["pause_code"] == "budget"
    assert emulator.stats.calls[CREATE] == 0  # the one batch does not fit

    table = invoke("status", "m1").stdout
    for shown in ("pause code", "budget", "spending cap reached", "--max-cost-usd"):
        assert shown in table
    assert "$0.000001" in table  # the cap
    assert "1h 59m" in table  # time left
    waited = invoke("wait", "m1", "--poll-interval", "0.05")
    assert "paused" in one_error_line(waited, 1)

    resumed = invoke("resume", "m1", "--max-cost-usd", "1", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert parsed(resumed)["max_cost_usd"] == 1.0
    assert invoke("wait", "m1", "--poll-interval", "0.05").exit_code == 0
    assert emulator.stats.calls[CREATE] == 1

    status = parsed(invoke("status", "m1", "--json"))
    assert status["status"] == "completed"
    assert status["pause_code"] is None
    assert status["cost_usd"] > 0
    assert status["committed_cost_usd"] == pytest.approx(status["cost_usd"])
    assert 7000 < status["time_left_seconds"] <= 7200
    table = invoke("status", "m1").stdout
    assert "spending cap" in table
    assert "$1.00" in table
    assert "committed cost" in table
    assert "cap left" in table


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_resume_refuses_a_bad_cap_in_one_line(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator, value: str
) -> None:
    write_csv(tmp_path / "in.csv", IDS)
    started = invoke("start", "in.csv", *JOB, "--run-id", "m2", "--max-cost-usd", "0.000001")
    assert started.exit_code == 0, started.stderr
    result = invoke("resume", "m2", "--max-cost-usd", value)
    assert "'--max-cost-usd'" in one_error_line(result, 2)
    status = parsed(invoke("status", "m2", "--json"))
    assert (status["status"], status["max_cost_usd"]) == ("paused", 0.000001)
