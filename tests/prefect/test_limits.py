"""The run's deadline and spending cap from Prefect: the tasks and the flow take them over the
job's own; the flow ends in a ``Failed`` state whose message is the reason when the run
stalled at its cap (and a flow run with the same key finishes once the cap is raised), or
when its deadline failed items (after writing the results and publishing the summary)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from batchor_prefect import BatchorConfig, artifact_key, run_batch_job

from batchor import BatchJob, BatchLimits, OpenAIProviderConfig, steps
from batchor.testing import OpenAIBatchEmulator

from .conftest import make_items, prompt
from .helpers import flow_run_id, table_artifact, task_runs


def capped_job() -> BatchJob:
    """Six items on a priced model, two a batch, with a generous cap of its own."""
    return BatchJob(
        items=make_items(6),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", request_params={"max_completion_tokens": 50}
        ),
        limits=BatchLimits(max_requests=2),
        max_cost_usd=100.0,
    )


@pytest.fixture
def emulator() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator(phase_seconds=0) as emu:
        yield emu


@pytest.fixture
def config(tmp_path: Path, emulator: OpenAIBatchEmulator) -> BatchorConfig:
    return BatchorConfig(
        store=f"sqlite:///{tmp_path}/store/batchor.db",
        artifacts=str(tmp_path / "artifacts"),
        openai_base_url=emulator.base_url,
        openai_api_key=emulator.api_key,
    )


def test_a_run_stalled_at_its_cap_fails_the_flow_with_the_reason(
    config: BatchorConfig, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    destination = tmp_path / "capped.jsonl"
    state = run_batch_job(
        job=capped_job,
        destination=destination,
        run_key="capped",
        config=config,
        max_cost_usd=0.000001,  # over the job's own $100
        return_state=True,
    )
    assert state.is_failed(), state
    assert state.message is not None
    assert state.message.startswith("run 'capped' stopped at its spending cap of $0.000001")
    assert "batchor resume capped --max-cost-usd" in state.message
    assert emulator.stats.batches_created == 0
    assert not destination.exists()
    runs = task_runs(flow_run_id(state))
    assert runs["wait-capped"] == ("Failed", 1)  # RunStateError: not retried
    assert "collect-capped" not in runs

    # Raise the cap as the message says; a flow run with the same key finishes the run.
    with config.runner() as runner:
        runner.get_run("capped").resume(max_cost_usd=5)
    again = run_batch_job(
        job=capped_job, destination=destination, run_key="capped", config=config,
        return_state=True,
    )  # fmt: skip
    assert again.is_completed(), again
    assert again.result().counts == {"completed": 6, "failed": 0, "cancelled": 0}
    assert emulator.stats.batches_created == 3


def test_a_run_its_deadline_failed_fails_the_flow_after_collecting(
    config: BatchorConfig, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    destination = tmp_path / "late.jsonl"
    state = run_batch_job(
        job=capped_job,
        destination=destination,
        run_key="late",
        config=config,
        deadline=past.isoformat(),  # as a deployment's JSON parameter carries it
        return_state=True,
    )
    assert state.is_failed(), state
    when = past.isoformat(timespec="seconds")
    assert state.message == (
        f"run 'late' passed its deadline {when}: 6 of 6 items failed with error class "
        f"'deadline'; results written to {destination.resolve()}"
    )
    assert emulator.stats.batches_created == 0
    # Nothing is lost: every item's result is written, and the summary published.
    result = state.result(raise_on_failure=False)
    assert isinstance(result, steps.CollectResult)
    assert result.counts == {"completed": 0, "failed": 6, "cancelled": 0}
    rows = [json.loads(line) for line in destination.read_text().splitlines()]
    assert {r["error"]["class"] for r in rows} == {"deadline"}
    summary = {
        r["metric"]: r["value"] for r in table_artifact(artifact_key("late"), flow_run_id(state))
    }
    assert summary["failed"] == 6
