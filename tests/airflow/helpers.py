"""Helpers of the Airflow tests: parse the test DAGs folder, run a DAG, read the outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchor import BatchRunner


def load_dag(dags: Path, dag_id: str) -> Any:
    """The DAG ``dag_id`` as Airflow parses it from the DAGs folder."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def task_states(dag_run: Any) -> dict[tuple[str, int], tuple[str, int]]:
    """``(task_id, map_index) -> (state, try_number)`` of a finished DAG run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id, ti.map_index): (str(ti.state), ti.try_number)
            for ti in dag_run.get_task_instances(session=session)
        }


def xcom(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    """The return value a task pushed to XCom in ``dag_run``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,
                key="return_value",
                dag_ids=dag_run.dag_id,
                task_ids=task_id,
                map_indexes=map_index,
            )
        ).first()
        assert row is not None, f"no XCom for {task_id}[{map_index}]"
        return XComModel.deserialize_value(row)


def store_runs(env: dict[str, str]) -> list[str]:
    """Ids of every run in the test's batchor store."""
    with BatchRunner(store=env["BATCHOR_STORE"], artifacts=env["BATCHOR_ARTIFACTS"]) as runner:
        return sorted(record.run_id for record in runner.store.list_runs())


def jsonl_ids(path: str | Path) -> list[str]:
    """The item ids of a JSONL results file, sorted."""
    lines = Path(path).read_text().splitlines()
    return sorted(json.loads(line)["item_id"] for line in lines)


def reschedules(dag_run: Any, task_id: str) -> int:
    """How many times a task of ``dag_run`` was rescheduled (``mode="reschedule"``)."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        (ti,) = [t for t in dag_run.get_task_instances(session=session) if t.task_id == task_id]
        query = select(func.count()).where(TaskReschedule.ti_id == ti.id)
        return int(session.scalar(query) or 0)
