"""The Airflow tasks on the core's one layer for orchestrators (`batchor.steps`): a task that
waits on its worker logs the run's progress meanwhile; a collect of a run that has not ended
raises `RunNotReady`, which Airflow retries, and succeeds once the provider has finished; a
run paused with nothing in flight (`RunStateError`) fails every task at once, without retry."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from batchor import BatchItem, BatchJob, OpenAIProviderConfig, PromptParts, RunNotReady
from tests.airflow.helpers import jsonl_ids, load_dag, task_states

pytest.importorskip("airflow")

PROGRESS = re.compile(r"batchor run \S+ (\w+): (\d+)/20 done \(0 failed\), (\d+) in flight")


def _job(n: int = 12) -> BatchJob:
    return BatchJob(
        items=[BatchItem(item_id=f"i-{k}", payload={"text": f"item {k}"}) for k in range(n)],
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
    )


def _out_of_quota_job() -> BatchJob:
    return _job(3)


@pytest.mark.parametrize("emulator", [1.0], indirect=True)
def test_a_task_waiting_on_its_worker_logs_progress(
    batchor_env: dict[str, str], emulator, airflow_db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # deferrable=False: the task blocks in `steps.wait` for a few seconds; a user watching a
    # long wait must see signs of life, not one line per poll.
    dag_run = load_dag(airflow_db, "batchor_test_killed").test()

    assert task_states(dag_run) == {("classify", -1): ("success", 1)}
    out, err = capfd.readouterr()
    lines = [m.groups() for m in PROGRESS.finditer(out + err)]
    assert lines, (out + err)[-3000:]
    status, done, in_flight = lines[0]
    assert (status, done, in_flight) == ("running", "0", "20")
    assert lines[-1] == ("completed", "20", "0")
    # A run of a few seconds: the start, the wait's first step and its end; the steps in
    # between (every 0.5 s) are not each logged, as a line a minute is enough.
    assert len(lines) <= 3
    results = Path(batchor_env["BATCHOR_TEST_RESULTS"]) / "killed.jsonl"
    assert jsonl_ids(results) == sorted(f"t-{k}" for k in range(20))


@pytest.mark.parametrize("emulator", [1.0], indirect=True)
def test_collect_before_the_end_retries_then_succeeds(
    batchor_env: dict[str, str], emulator, tmp_path: Path
) -> None:
    from batchor_airflow import BatchorCollectOperator, BatchorStartOperator

    started = BatchorStartOperator(task_id="start", job=_job, run_id="early").execute({})
    collect = BatchorCollectOperator(
        task_id="collect", run_id="early", destination=str(tmp_path / "early.jsonl")
    )
    # Not an AirflowFailException: Airflow retries the task.
    with pytest.raises(RunNotReady, match="collect it once it has ended"):
        collect.execute({})

    deadline = time.monotonic() + 60
    while any(b["status"] != "completed" for b in emulator.batches()):
        assert time.monotonic() < deadline, emulator.batches()
        time.sleep(0.1)
    # Nothing polled the run since: the collect brings it up to date itself.
    result = collect.execute({})
    assert result["run_id"] == started["run_id"] == "early"
    assert result["counts"]["completed"] == 12
    assert jsonl_ids(result["uri"]) == sorted(f"i-{k}" for k in range(12))


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "blocking"])
def test_a_run_paused_with_nothing_in_flight_fails_every_task_without_retry(
    batchor_env: dict[str, str], emulator, tmp_path: Path, deferrable: bool
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from batchor_airflow import BatchorCollectOperator, BatchorRunOperator, BatchorSensor

    emulator.faults.create_insufficient_quota_count = 1  # the run pauses as it starts
    run = BatchorRunOperator(
        task_id="classify",
        job=_out_of_quota_job,
        run_id="quota",
        destination=str(tmp_path / "never.jsonl"),
        deferrable=deferrable,
        poll_interval=0.5,
    )
    # At once: a deferrable task does not defer (TaskDeferred) to wait for what never comes.
    with pytest.raises(AirflowFailException, match=r"RunStateError: .*paused"):
        run.execute({})

    sensor = BatchorSensor(task_id="wait", run_id="quota", deferrable=deferrable)
    check = sensor.execute if deferrable else sensor.poke  # what rescheduling mode calls
    with pytest.raises(AirflowFailException, match=r"RunStateError: .*paused"):
        check({})
    collect = BatchorCollectOperator(
        task_id="collect", run_id="quota", destination=str(tmp_path / "never.jsonl")
    )
    with pytest.raises(AirflowFailException, match="batchor resume quota"):
        collect.execute({})
    assert not (tmp_path / "never.jsonl").exists()
