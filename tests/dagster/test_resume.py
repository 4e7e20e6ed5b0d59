"""A materialisation that crashes after submitting attaches to the same batchor run when the
partition is materialised again or the failed Dagster run is re-executed: the emulator sees
exactly one batch per batch key."""

from __future__ import annotations

from pathlib import Path

import pytest
from batchor_dagster import BatchorResource
from dagster import (
    DagsterInstance,
    ReexecutionOptions,
    execute_job,
    materialize,
    reconstructable,
)

from batchor.testing import OpenAIBatchEmulator

from .conftest import SECRET, daily_labels
from .crashing import CrashOnceResource
from .test_assets import _metadata

_KEY = "batchor_batch_key"


def _observed_run_ids(instance: DagsterInstance, run_id: str) -> list[str]:
    return [
        str(e.dagster_event.event_specific_data.asset_observation.metadata["batchor/run_id"].value)
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
    ]


def test_rematerialising_after_a_crash_attaches_to_the_same_run(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    labels = daily_labels(str(tmp_path / "out" / "{partition_key}.jsonl"))
    flag = tmp_path / "crash"
    flag.touch()
    crashing = CrashOnceResource(crash_flag=str(flag), **resource.model_dump())
    first = materialize(
        [labels],
        partition_key="2026-11-23",
        resources={"batchor": crashing},
        instance=instance,
        raise_on_error=False,
    )
    assert not first.success
    assert "SimulatedCrash" in str(first.get_step_failure_events()[0].step_failure_data.error)
    assert emulator.stats.batches_created == 3  # submitted before the crash
    [started] = _observed_run_ids(instance, first.run_id)

    # A new materialisation of the partition: another Dagster run, another root run id.
    second = materialize(
        [labels], partition_key="2026-11-23", resources={"batchor": resource}, instance=instance
    )
    assert second.success
    assert _metadata(instance, second.run_id)["batchor/run_id"] == started
    by_key = emulator.stats.batches_by_metadata(_KEY)
    assert len(by_key) == 3
    assert set(by_key.values()) == {1}
    assert emulator.stats.batches_created == 3
    assert len((tmp_path / "out" / "2026-11-23.jsonl").read_text().splitlines()) == 12

    # Once it has materialised, materialising the partition again with the same job reuses
    # the finished run (see test_reuse.py); asking for a rerun buys a fresh one.
    third = materialize(
        [labels], partition_key="2026-11-23", resources={"batchor": resource}, instance=instance
    )
    assert _metadata(instance, third.run_id)["batchor/reused_run_id"] == started
    assert emulator.stats.batches_created == 3


def test_reexecuting_the_failed_run_resumes_the_same_batch_run(
    emulator: OpenAIBatchEmulator,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flag = tmp_path / "crash"
    flag.touch()
    monkeypatch.setenv("CRASH_FLAG", str(flag))
    monkeypatch.setenv("REEXEC_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("BATCHOR_STORE", f"sqlite:///{tmp_path}/state/batchor.db")
    monkeypatch.setenv("BATCHOR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    from . import reexec_defs

    job = reconstructable(reexec_defs.labels_job)
    tags = {"dagster/partition": "2026-11-24"}
    with execute_job(job, instance, tags=tags, raise_on_error=False) as first:
        assert not first.success
    assert emulator.stats.batches_created == 3
    options = ReexecutionOptions.from_failure(first.run_id, instance)
    with execute_job(
        job, instance, tags=tags, reexecution_options=options, raise_on_error=False
    ) as again:
        assert again.success
        assert again.dagster_run.root_run_id == first.run_id
    run_id = _metadata(instance, again.run_id)["batchor/run_id"]
    assert run_id == f"labels.2026-11-24.{first.run_id}"  # from the root run id
    assert set(emulator.stats.batches_by_metadata(_KEY).values()) == {1}
    assert emulator.stats.batches_created == 3
    assert (tmp_path / "out" / "2026-11-24.jsonl").is_file()
