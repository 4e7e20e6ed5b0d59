"""The example code location: it loads, its partitioned asset materialises in-process with
the right metadata and results, and the documented `dagster asset materialize` command works
against the emulator from a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from batchor_dagster import BatchorResource
from dagster import AssetKey, DagsterInstance, Definitions, materialize
from dagster._core.instance.ref import InstanceRef

from batchor.testing import OpenAIBatchEmulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dagster" / "definitions.py"


def test_example_loads_and_materialises_a_partition(
    emulator: OpenAIBatchEmulator, resource: BatchorResource, instance: DagsterInstance
) -> None:
    from examples.dagster import definitions as example

    Definitions.validate_loadable(example.defs)
    outcome = materialize(
        [example.reviews, example.review_labels],
        partition_key="2026-11-23",
        resources={"batchor": resource},
        instance=instance,
    )
    assert outcome.success
    meta = _metadata_of(instance, outcome.run_id, "review_labels")
    assert meta["batchor/items"] == {"completed": 20, "failed": 0, "cancelled": 0}
    assert meta["openai.gpt-4.1-mini.total_tokens"] > 0
    out = Path(".batchor/example/review_labels/2026-11-23.jsonl").resolve()
    assert meta["batchor/results_uri"] == str(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20
    assert {r["output"]["label"] for r in rows} <= {"positive", "negative", "neutral"}
    assert all(r["source"].endswith("reviews/2026-11-23.jsonl") for r in rows)  # lineage
    assert sorted(r["row"] for r in rows) == list(range(20))


def _metadata_of(instance: DagsterInstance, run_id: str, asset: str) -> dict[str, object]:
    records = instance.fetch_materializations(AssetKey(asset), limit=1).records
    assert records
    assert records[0].run_id == run_id
    mat = records[0].asset_materialization
    assert mat is not None
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.timeout(120)
@pytest.mark.slow  # `dagster asset materialize` in a child process
def test_documented_cli_command_materialises_the_example(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with OpenAIBatchEmulator() as emulator:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": emulator.api_key,
        }
        dagster = Path(sys.executable).parent / "dagster"
        command = [str(dagster), "asset", "materialize", "-f", str(EXAMPLE)]
        command += ["--select", "reviews,review_labels", "--partition", "2026-11-24"]
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert set(emulator.stats.batches_by_metadata("batchor_batch_key").values()) == {1}
    out = tmp_path / ".batchor" / "example" / "review_labels" / "2026-11-24.jsonl"
    assert len(out.read_text().splitlines()) == 20
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        records = instance.fetch_materializations(AssetKey("review_labels"), limit=1).records
        mat = records[0].asset_materialization
        assert mat is not None
        assert mat.partition == "2026-11-24"
        assert mat.metadata["batchor/results_uri"].value == str(out.resolve())
        assert mat.metadata["batchor/completed"].value == 20
    assert (tmp_path / ".batchor" / "batchor.db").is_file()  # the default store
    key = emulator.api_key
    assert key not in done.stdout + done.stderr
    for path in [*home.rglob("*"), *(tmp_path / ".batchor").rglob("*")]:
        assert not path.is_file() or key.encode() not in path.read_bytes(), path
