"""Templates that work for every kind of DAG run: a manual run has no logical date in Airflow 3
(no ``ds``, ``ts_nodash``...), so the example DAG and the documented templates must not need
one; and a templated field that renders to nothing fails at once, naming the field."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.helpers import jsonl_ids, load_dag, store_runs, task_states, xcom

pytest.importorskip("airflow")

EXAMPLE_CSV = Path(__file__).parents[2] / "examples" / "airflow" / "tickets.csv"


def test_example_dag_runs_without_a_logical_date(
    batchor_env: dict[str, str],
    emulator,
    airflow_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `airflow dags trigger` and the UI's trigger button create runs without a logical date
    # in Airflow 3: the example used to fail with "'ts_nodash' is undefined".
    monkeypatch.setenv("BATCHOR_EXAMPLE_RESULTS", str(tmp_path / "example"))
    monkeypatch.setenv("BATCHOR_EXAMPLE_POLL_INTERVAL", "0.5")

    dag_run = load_dag(airflow_db, "batchor_classify_tickets").test(logical_date=None)

    assert dag_run.logical_date is None
    assert task_states(dag_run) == {("classify", -1): ("success", 1)}
    handle = xcom(dag_run, "classify")
    with EXAMPLE_CSV.open() as fh:
        assert jsonl_ids(handle["uri"]) == sorted(row["ticket_id"] for row in csv.DictReader(fh))
    # One results file per DAG run, named after it (without the colons of its timestamp).
    name = Path(handle["uri"]).name
    assert name == f"tickets-{dag_run.run_id.replace(':', '')}.jsonl"
    assert name.startswith("tickets-manual__")


@pytest.mark.parametrize(
    ("logical_date", "day"),
    [(None, None), (datetime(2026, 3, 4, 5, 6, tzinfo=UTC), "2026-03-04")],
    ids=["manual", "scheduled"],
)
def test_documented_templates_render_with_and_without_a_logical_date(
    batchor_env: dict[str, str], airflow_db: Path, logical_date: datetime | None, day: str | None
) -> None:
    # The business key of the how-to page: the logical date's day when there is one, else
    # the day the run was triggered.
    dag_run = load_dag(airflow_db, "batchor_test_templates").test(logical_date=logical_date)

    assert task_states(dag_run) == {("classify", -1): ("success", 1)}
    handle = xcom(dag_run, "classify")
    expected_day = day or dag_run.run_after.strftime("%Y-%m-%d")
    assert handle["run_id"] == f"tickets-{expected_day}"
    uri = Path(handle["uri"])
    assert uri.name == f"{dag_run.run_id.replace(':', '')}.jsonl"
    assert ":" not in uri.name


def test_template_rendering_to_nothing_fails_without_retry(
    batchor_env: dict[str, str], airflow_db: Path
) -> None:
    # destination="{{ params.out }}" with an empty param: retries=3, yet it fails at once,
    # before anything was started.
    dag_run = load_dag(airflow_db, "batchor_test_empty_template").test()

    assert task_states(dag_run) == {("classify", -1): ("failed", 1)}
    assert store_runs(batchor_env) == []


def _operators() -> list[tuple[Any, dict[str, Any], str]]:
    from batchor_airflow import (
        BatchorCollectOperator,
        BatchorRunOperator,
        BatchorSensor,
        BatchorStartOperator,
    )

    run = {"job": "x:y", "destination": "out.jsonl"}
    return [
        (BatchorRunOperator, {**run, "destination": " "}, "destination"),
        (BatchorRunOperator, {**run, "run_id": ""}, "run_id"),
        (BatchorRunOperator, {**run, "store": ""}, "store"),
        (BatchorRunOperator, {**run, "artifacts": "\n"}, "artifacts"),
        (BatchorStartOperator, {"job": "x:y", "run_id": ""}, "run_id"),
        (BatchorCollectOperator, {"run_id": "r", "destination": ""}, "destination"),
        (BatchorCollectOperator, {"run_id": "", "destination": "out.csv"}, "run_id"),
        (BatchorSensor, {"run_id": ""}, "run_id"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_empty_rendered_field_is_a_one_line_permanent_error(airflow_db: Path, case: int) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    cls, kwargs, field = _operators()[case]
    operator = cls(task_id="t", **kwargs)

    with pytest.raises(AirflowFailException) as excinfo:
        operator.execute({})

    message = str(excinfo.value)
    assert "\n" not in message
    assert f"{field}=" in message
    assert "rendered to an empty string" in message
