"""batchor_asset materialises with real Dagster against the emulator: metadata, results,
the failure-rate check, one run per partition, and nothing secret in the event log."""

from __future__ import annotations

import json
from pathlib import Path

from batchor_dagster import BatchorResource
from dagster import DagsterEventType, DagsterInstance, materialize

from batchor.testing import OpenAIBatchEmulator

from .conftest import SECRET, daily_labels


def _metadata(instance: DagsterInstance, run_id: str) -> dict[str, object]:
    [event] = [
        e
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None
        and e.dagster_event.event_type is DagsterEventType.ASSET_MATERIALIZATION
    ]
    mat = event.dagster_event.event_specific_data.materialization  # type: ignore[union-attr]
    return {k: v.value for k, v in mat.metadata.items()}


def test_partitioned_asset_materialises_results_and_metadata(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    labels = daily_labels(str(tmp_path / "out" / "{partition_key}.jsonl"))
    outcome = materialize(
        [labels], partition_key="2026-11-23", resources={"batchor": resource}, instance=instance
    )
    assert outcome.success
    meta = _metadata(instance, outcome.run_id)
    run_id = meta["batchor/run_id"]
    assert run_id == f"labels.2026-11-23.{outcome.run_id}"
    assert meta["batchor/run_status"] == "completed"
    assert meta["batchor/items"] == {"completed": 12, "failed": 0, "cancelled": 0}
    assert meta["dagster/row_count"] == 12
    assert meta["openai.gpt-4.1-mini.prompt_tokens"] > 0
    assert (
        meta["openai.gpt-4.1-mini.total_tokens"]
        == meta["openai.gpt-4.1-mini.prompt_tokens"] + meta["openai.gpt-4.1-mini.completion_tokens"]
    )
    assert meta["batchor/cost_usd"] > 0
    out = tmp_path / "out" / "2026-11-23.jsonl"
    assert meta["batchor/results_uri"] == str(out.resolve())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(f"2026-11-23-{i}" for i in range(12))
    assert all(r["status"] == "completed" and r["output"]["label"] for r in rows)
    checks = {c.check_name: c for c in outcome.get_asset_check_evaluations()}
    assert set(checks) == {"batchor_failure_rate", "batchor_limits"}
    assert checks["batchor_limits"].passed  # no deadline, no cap: nothing stopped the run
    check = checks["batchor_failure_rate"]
    assert check.passed
    assert check.check_name == "batchor_failure_rate"
    assert emulator.stats.batches_created == 3  # 12 items, 5 per batch

    # Another partition is another run, with its own file.
    other = materialize(
        [labels], partition_key="2026-11-24", resources={"batchor": resource}, instance=instance
    )
    assert _metadata(instance, other.run_id)["batchor/run_id"] != run_id
    assert (tmp_path / "out" / "2026-11-24.jsonl").is_file()
    assert emulator.stats.batches_created == 6

    # The key reached the provider (the emulator refuses any other) and nowhere else.
    for dagster_run in (outcome.run_id, other.run_id):
        assert SECRET not in "".join(str(e) for e in instance.all_logs(dagster_run))
    assert not any(
        SECRET in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file()
    )
