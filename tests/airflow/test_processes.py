"""Airflow in separate processes: a task SIGKILLed right after its first batch was created at
the provider, then run again in the same DAG run, attaches to its run and submits nothing
twice; and ``airflow dags test`` runs the example DAG as the how-to page says."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.airflow.helpers import jsonl_ids, store_runs

# Airflow in child processes (one SIGKILLed, `airflow dags test`): the slow tier.
pytestmark = pytest.mark.slow

pytest.importorskip("airflow")

EXAMPLE_CSV = Path(__file__).parents[2] / "examples" / "airflow" / "tickets.csv"


def test_task_killed_after_submission_attaches_on_rerun(
    batchor_env: dict[str, str], emulator, airflow_db: Path, tmp_path: Path
) -> None:
    # The provider records the first batch, then takes 2 s to answer: the task is killed in
    # that gap, so the batch exists at the provider but its id was never saved.
    emulator.faults.create_response_delay = 2.0
    command = [
        sys.executable,
        str(airflow_db / "batchor_test_dags.py"),
        "batchor_test_killed",
        "2026-02-01T00:00:00+00:00",
    ]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while emulator.stats.batches_created == 0:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the task never submitted a batch"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert emulator.stats.batches_created == 1
    (run_id,) = store_runs(batchor_env)

    emulator.faults.create_response_delay = 0.0
    second = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    assert store_runs(batchor_env) == [run_id]  # the same DAG run gave the same batchor run
    per_key = emulator.stats.batches_by_metadata("batchor_batch_key")
    assert sorted(per_key.values()) == [1, 1, 1, 1]  # 20 items, 5 per batch, each sent once
    assert emulator.stats.batches_created == 4
    results = Path(batchor_env["BATCHOR_TEST_RESULTS"]) / "killed.jsonl"
    assert jsonl_ids(results) == sorted(f"t-{i}" for i in range(20))


def test_airflow_dags_test_runs_the_example(
    batchor_env: dict[str, str], emulator, airflow_db: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "BATCHOR_EXAMPLE_RESULTS": str(tmp_path / "cli"),
        "BATCHOR_EXAMPLE_POLL_INTERVAL": "1",
    }
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "dags", "test", "batchor_classify_tickets"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "state=success" in done.stdout + done.stderr
    (results,) = (tmp_path / "cli").glob("tickets-*.jsonl")
    with EXAMPLE_CSV.open() as fh:
        assert jsonl_ids(results) == sorted(row["ticket_id"] for row in csv.DictReader(fh))
    assert "sk-emulator" not in done.stdout + done.stderr  # the key is never logged
