"""Real Airflow in-process (``dag.test()``) against the emulator: the example DAG, the
deferrable and rescheduling paths, mapping, retries after submission and permanent errors."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.helpers import (
    jsonl_ids,
    load_dag,
    reschedules,
    store_runs,
    task_states,
    xcom,
)

pytest.importorskip("airflow")

EXAMPLE_CSV = Path(__file__).parents[2] / "examples" / "airflow" / "tickets.csv"


@pytest.fixture
def trigger_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event `BatchorRunTrigger` fires (a spy: the trigger still runs as it is)."""
    from batchor_airflow.triggers import BatchorRunTrigger

    events: list[dict[str, Any]] = []
    original = BatchorRunTrigger.run

    async def spy(self: BatchorRunTrigger) -> AsyncIterator[Any]:
        async for event in original(self):
            events.append(event.payload)
            yield event

    monkeypatch.setattr(BatchorRunTrigger, "run", spy)
    return events


def per_key(emulator) -> Counter[str]:
    """Provider batches created per batchor batch key."""
    return emulator.stats.batches_by_metadata("batchor_batch_key")


def test_example_dag_classifies_every_row_through_a_connection(
    batchor_env: dict[str, str],
    emulator,
    airflow_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trigger_events: list[dict[str, Any]],
) -> None:
    # Credentials and the store come from an Airflow connection in the openai format; the
    # environment holds none of them.
    conn = {
        "conn_type": "openai",
        "host": emulator.base_url,
        "password": emulator.api_key,
        "extra": {
            "batchor_store": batchor_env["BATCHOR_STORE"],
            "batchor_artifacts": batchor_env["BATCHOR_ARTIFACTS"],
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
    for name in ("OPENAI_API_KEY", "BATCHOR_STORE", "BATCHOR_ARTIFACTS"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("BATCHOR_EXAMPLE_RESULTS", str(tmp_path / "example"))
    monkeypatch.setenv("BATCHOR_EXAMPLE_POLL_INTERVAL", "0.5")

    dag_run = load_dag(airflow_db, "batchor_classify_tickets").test()

    assert task_states(dag_run) == {("classify", -1): ("success", 1)}
    handle = xcom(dag_run, "classify")
    with EXAMPLE_CSV.open() as fh:
        rows = sorted(row["ticket_id"] for row in csv.DictReader(fh))
    assert jsonl_ids(handle["uri"]) == rows
    assert handle["counts"] == {"completed": len(rows), "failed": 0, "cancelled": 0}
    assert handle["run_status"] == "completed"
    first = json.loads(Path(handle["uri"]).read_text().splitlines()[0])
    assert set(first["output"]) == {"category", "urgent", "summary"}
    assert Path(handle["uri"]).parent == tmp_path / "example"
    # The default run id names the DAG, the DAG run and the task.
    assert handle["run_id"].startswith("batchor_classify_tickets.manual__")
    assert set(per_key(emulator).values()) == {1}
    assert emulator.stats.batches_created == 2  # 20 rows, 10 per batch
    # The task deferred at least once and resumed on the trigger's event.
    assert trigger_events
    assert {e["run_id"] for e in trigger_events} == {handle["run_id"]}


@pytest.mark.parametrize("emulator", [0.3], indirect=True)
def test_start_deferrable_sensor_collect(
    batchor_env: dict[str, str],
    emulator,
    airflow_db: Path,
    trigger_events: list[dict[str, Any]],
) -> None:
    dag_run = load_dag(airflow_db, "batchor_test_split").test()

    states = task_states(dag_run)
    assert {k: v[0] for k, v in states.items()} == {
        ("start", -1): "success",
        ("wait", -1): "success",
        ("collect", -1): "success",
    }
    started, waited, collected = (xcom(dag_run, t) for t in ("start", "wait", "collect"))
    assert started["run_id"] == waited["run_id"] == collected["run_id"]
    assert (started["status"], started["total"]) == ("running", 12)
    assert (waited["status"], waited["counts"]["completed"]) == ("completed", 12)
    assert collected["counts"]["completed"] == 12
    assert collected["uri"].endswith("split.csv")
    with open(collected["uri"]) as fh:
        assert len(list(csv.DictReader(fh))) == 12
    assert store_runs(batchor_env) == [started["run_id"]]
    assert trigger_events  # the sensor deferred
    assert {e["reason"] for e in trigger_events} <= {"poll", "terminal"}


@pytest.mark.parametrize("emulator", [0.3], indirect=True)
def test_rescheduling_sensor(batchor_env: dict[str, str], emulator, airflow_db: Path) -> None:
    dag_run = load_dag(airflow_db, "batchor_test_reschedule").test()

    assert {k: v[0] for k, v in task_states(dag_run).items()} == {
        ("start", -1): "success",
        ("wait", -1): "success",
        ("collect", -1): "success",
    }
    assert len(jsonl_ids(xcom(dag_run, "collect")["uri"])) == 12
    assert xcom(dag_run, "wait")["counts"]["completed"] == 12
    assert reschedules(dag_run, "wait") >= 1  # it waited without holding a worker slot
    assert set(per_key(emulator).values()) == {1}


def test_mapped_task_gives_one_run_per_input(
    batchor_env: dict[str, str], emulator, airflow_db: Path
) -> None:
    dag_run = load_dag(airflow_db, "batchor_test_mapped").test()

    states = task_states(dag_run)
    assert states == {("classify", i): ("success", 1) for i in range(3)}
    handles = [xcom(dag_run, "classify", i) for i in range(3)]
    assert len({h["run_id"] for h in handles}) == 3
    assert sorted(store_runs(batchor_env)) == sorted(h["run_id"] for h in handles)
    for index, (tag, n) in enumerate([("a", 3), ("b", 4), ("c", 5)]):
        assert handles[index]["uri"].endswith(f"mapped-{index}.jsonl")
        assert jsonl_ids(handles[index]["uri"]) == sorted(f"{tag}-{i}" for i in range(n))
    assert set(per_key(emulator).values()) == {1}


def test_retry_after_submission_attaches_to_the_same_run(
    batchor_env: dict[str, str], emulator, airflow_db: Path
) -> None:
    dag_run = load_dag(airflow_db, "batchor_test_retry").test()

    # Try 1 submitted its batches then died; Airflow retried it; try 2 attached.
    assert task_states(dag_run) == {("classify", -1): ("success", 2)}
    handle = xcom(dag_run, "classify")
    assert store_runs(batchor_env) == [handle["run_id"]]
    keys = per_key(emulator)
    assert sorted(keys.values()) == [1, 1, 1]  # 12 items, 4 per batch
    assert emulator.stats.batches_created == 3
    assert jsonl_ids(handle["uri"]) == sorted(f"t-{i}" for i in range(12))


def test_results_go_to_an_object_store_uri(
    batchor_env: dict[str, str],
    emulator,
    airflow_db: Path,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fsspec
    import pyarrow.parquet as pq

    destination = f"{s3_bucket}/results/tickets.parquet"
    monkeypatch.setenv("BATCHOR_TEST_URI", destination)
    dag_run = load_dag(airflow_db, "batchor_test_uri").test()

    handle = xcom(dag_run, "classify")
    assert handle["uri"] == destination
    with fsspec.open(destination, "rb") as fh:
        table = pq.read_table(fh)
    assert sorted(table.column("item_id").to_pylist()) == sorted(f"t-{i}" for i in range(12))


def test_permanent_error_fails_without_retry(batchor_env: dict[str, str], airflow_db: Path) -> None:
    dag_run = load_dag(airflow_db, "batchor_test_permanent").test()

    # retries=3, yet a job path that cannot be imported fails at once.
    assert task_states(dag_run) == {("classify", -1): ("failed", 1)}
    assert store_runs(batchor_env) == []


def test_job_mismatch_fails_without_retry(batchor_env: dict[str, str], airflow_db: Path) -> None:
    dag_run = load_dag(airflow_db, "batchor_test_mismatch").test()

    # "other" reuses the business key of "first" with a different job: JobMismatchError,
    # which no retry can fix, so the task fails on its first try despite retries=3.
    assert task_states(dag_run) == {("first", -1): ("success", 1), ("other", -1): ("failed", 1)}
    assert store_runs(batchor_env) == [xcom(dag_run, "first")["run_id"]]
    assert xcom(dag_run, "first")["run_id"].startswith("shared-")
