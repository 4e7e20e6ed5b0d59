"""DAGs the Airflow integration tests run with ``dag.test()`` (and, for the kill test, as a
script in a subprocess: ``python batchor_test_dags.py DAG_ID ISO_DATE``)."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, get_current_context
from batchor_airflow import (
    BatchorCollectOperator,
    BatchorRunOperator,
    BatchorSensor,
    BatchorStartOperator,
)

from batchor import BatchItem, BatchJob, BatchLimits, OpenAIProviderConfig, PromptParts, RunSummary

RESULTS = os.environ.get("BATCHOR_TEST_RESULTS", "results")
START = datetime(2026, 1, 1)


def small_job(tag: str = "t", n: int = 12, per_batch: int = 4) -> BatchJob:
    """``n`` one-line prompts, ``per_batch`` per provider batch."""
    return BatchJob(
        items=[BatchItem(item_id=f"{tag}-{i}", payload={"text": f"{tag} {i}"}) for i in range(n)],
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        limits=BatchLimits(max_requests=per_batch),
    )


class DiesInFirstWait(BatchorRunOperator):
    """A run operator (not deferrable) whose worker dies as its wait begins on try 1, after
    the batches were submitted (as a lost worker or an OOM kill would)."""

    def wait_blocking(self, run_id: str) -> RunSummary:
        """Fail on try 1; behave normally afterwards."""
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("worker lost after submission")
        return super().wait_blocking(run_id)


with DAG("batchor_test_split", schedule=None, start_date=START, catchup=False) as split:
    start = BatchorStartOperator(task_id="start", job=small_job)
    wait = BatchorSensor(
        task_id="wait",
        run_id="{{ ti.xcom_pull(task_ids='start')['run_id'] }}",
        deferrable=True,
        poll_interval=0.5,
    )
    collect = BatchorCollectOperator(
        task_id="collect",
        run_id=start.output["run_id"],
        destination=RESULTS + "/split.csv",
        fail_on_failed_items=True,
    )
    start >> wait >> collect

with DAG("batchor_test_reschedule", schedule=None, start_date=START, catchup=False) as resched:
    start = BatchorStartOperator(task_id="start", job="batchor_test_dags:small_job")
    wait = BatchorSensor(
        task_id="wait", run_id=start.output["run_id"], deferrable=False, poll_interval=0.5
    )
    collect = BatchorCollectOperator(
        task_id="collect", run_id=start.output["run_id"], destination=RESULTS + "/resched.jsonl"
    )
    start >> wait >> collect

with DAG("batchor_test_mapped", schedule=None, start_date=START, catchup=False) as mapped:
    BatchorRunOperator.partial(
        task_id="classify",
        job=small_job,
        destination=RESULTS + "/mapped-{{ ti.map_index }}.jsonl",
        deferrable=True,
        poll_interval=0.5,
    ).expand(job_kwargs=[{"tag": "a", "n": 3}, {"tag": "b", "n": 4}, {"tag": "c", "n": 5}])

with DAG("batchor_test_retry", schedule=None, start_date=START, catchup=False) as retry:
    DiesInFirstWait(
        task_id="classify",
        job=small_job,
        destination=RESULTS + "/retry.jsonl",
        deferrable=False,
        poll_interval=0.5,
        retries=1,
        retry_delay=timedelta(0),
    )

with DAG("batchor_test_killed", schedule=None, start_date=START, catchup=False) as killed:
    BatchorRunOperator(
        task_id="classify",
        job=small_job,
        job_kwargs={"n": 20, "per_batch": 5},
        destination=RESULTS + "/killed.jsonl",
        deferrable=False,
        poll_interval=0.5,
    )

with DAG("batchor_test_uri", schedule=None, start_date=START, catchup=False) as uri:
    BatchorRunOperator(
        task_id="classify",
        job=small_job,
        destination=os.environ.get("BATCHOR_TEST_URI", "memory://batchor/results.parquet"),
        deferrable=True,
        poll_interval=0.3,
    )

with DAG("batchor_test_permanent", schedule=None, start_date=START, catchup=False) as permanent:
    BatchorRunOperator(
        task_id="classify",
        job="no_such_module_anywhere:make_job",
        destination=RESULTS + "/never.jsonl",
        retries=3,
        retry_delay=timedelta(0),
    )


with DAG("batchor_test_mismatch", schedule=None, start_date=START, catchup=False) as mismatch:
    first = BatchorStartOperator(task_id="first", job=small_job, run_id="shared-{{ ds }}")
    other = BatchorStartOperator(
        task_id="other",
        job=small_job,
        job_kwargs={"tag": "other"},
        run_id="shared-{{ ds }}",
        retries=3,
        retry_delay=timedelta(0),
    )
    first >> other

# The templates of the docs, for runs with and without a logical date (manual runs have none).
with DAG("batchor_test_templates", schedule=None, start_date=START, catchup=False) as templates:
    BatchorRunOperator(
        task_id="classify",
        job=small_job,
        job_kwargs={"n": 3},
        run_id="tickets-{{ (dag_run.logical_date or dag_run.run_after) | ds }}",
        destination=RESULTS + "/{{ run_id | replace(':', '') }}.jsonl",
        deferrable=True,
        poll_interval=0.3,
    )

with DAG(
    "batchor_test_empty_template",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"out": ""},
) as empty_template:
    BatchorRunOperator(
        task_id="classify",
        job=small_job,
        destination="{{ params.out }}",
        retries=3,
        retry_delay=timedelta(0),
    )


def _main(argv: list[str]) -> None:
    """Run one DAG of this file for a fixed logical date, so a second call reruns the same
    DAG run (same Airflow run id)."""
    dags: dict[str, Any] = {
        d.dag_id: d for d in (split, resched, mapped, retry, killed, uri, permanent)
    }
    when = datetime.fromisoformat(argv[2])
    run = dags[argv[1]].test(logical_date=when, run_after=when)
    sys.exit(0 if run.state == "success" else 1)


if __name__ == "__main__":
    _main(sys.argv)
