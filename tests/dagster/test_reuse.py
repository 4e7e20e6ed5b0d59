"""Re-materialising a partition whose job is unchanged reuses the run its last
materialisation drove (no new provider batch, ``batchor/reused_run_id`` in the metadata);
a changed model or input starts a new run; ``rerun: true`` buys a new one on purpose. The
same holds for unpartitioned assets and for the submit asset of the sensor mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchor_dagster import REUSED_RUN_KEY, BatchorResource, batchor_asset, batchor_sensor_assets
from dagster import AssetExecutionContext, DagsterInstance, materialize

from batchor import BatchJob, BatchLimits, JsonlItemSource, OpenAIProviderConfig
from batchor.testing import OpenAIBatchEmulator

from .conftest import DAYS, Label, daily_labels, day_job, prompt
from .test_assets import _metadata

_DAY = "2026-11-23"


def _rerun(asset_name: str) -> dict[str, Any]:
    return {"ops": {asset_name: {"config": {"rerun": True}}}}


def test_rematerialising_an_unchanged_partition_reuses_its_run(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    labels = daily_labels(str(tmp_path / "out" / "{partition_key}.jsonl"))
    resources = {"batchor": resource}
    first = materialize([labels], partition_key=_DAY, resources=resources, instance=instance)
    first_meta = _metadata(instance, first.run_id)
    run_id = first_meta["batchor/run_id"]
    assert REUSED_RUN_KEY not in first_meta
    assert emulator.stats.batches_created == 3

    # Same partition, same job, a new Dagster run: the finished run is reused, nothing bought.
    again = materialize([labels], partition_key=_DAY, resources=resources, instance=instance)
    assert again.success
    meta = _metadata(instance, again.run_id)
    assert meta["batchor/run_id"] == run_id
    assert meta[REUSED_RUN_KEY] == run_id
    assert meta["batchor/items"] == first_meta["batchor/items"]
    assert meta["dagster/row_count"] == 12
    assert emulator.stats.batches_created == 3
    assert len((tmp_path / "out" / f"{_DAY}.jsonl").read_text().splitlines()) == 12

    # Another partition is still its own run.
    other = materialize(
        [labels], partition_key="2026-11-24", resources=resources, instance=instance
    )
    assert REUSED_RUN_KEY not in _metadata(instance, other.run_id)
    assert emulator.stats.batches_created == 6

    # rerun: true buys a new run on purpose; the next plain materialisation reuses that one.
    fresh = materialize(
        [labels],
        partition_key=_DAY,
        resources=resources,
        instance=instance,
        run_config=_rerun("labels"),
    )
    fresh_meta = _metadata(instance, fresh.run_id)
    assert fresh_meta["batchor/run_id"] not in (run_id, None)
    assert REUSED_RUN_KEY not in fresh_meta
    assert emulator.stats.batches_created == 9
    latest = materialize([labels], partition_key=_DAY, resources=resources, instance=instance)
    assert _metadata(instance, latest.run_id)[REUSED_RUN_KEY] == fresh_meta["batchor/run_id"]
    assert emulator.stats.batches_created == 9


def _write_rows(path: Path, texts: list[str]) -> None:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )


def test_a_changed_input_or_model_starts_a_new_run_and_unpartitioned_assets_reuse_too(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    source = tmp_path / "rows.jsonl"
    texts = [f"review {i}" for i in range(12)]
    _write_rows(source, texts)
    model = {"name": "gpt-4.1-mini"}

    def file_job(context: AssetExecutionContext) -> BatchJob:
        return BatchJob(
            items=JsonlItemSource(str(source), id_field="id"),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(model=model["name"]),
            structured_output=Label,
            limits=BatchLimits(max_requests=20),
        )

    labels = batchor_asset(  # unpartitioned
        name="labels", job=file_job, destination=str(tmp_path / "labels.jsonl"), poll_interval=0.2
    )
    resources = {"batchor": resource}

    def run_id_of_next() -> tuple[str, bool]:
        outcome = materialize([labels], resources=resources, instance=instance)
        assert outcome.success
        meta = _metadata(instance, outcome.run_id)
        return str(meta["batchor/run_id"]), REUSED_RUN_KEY in meta

    first, reused = run_id_of_next()
    assert not reused
    assert emulator.stats.batches_created == 1
    assert run_id_of_next() == (first, True)
    assert emulator.stats.batches_created == 1

    # The last row changed (beyond the prompts the core compares): the content differs.
    _write_rows(source, [*texts[:-1], "a different last review"])
    second, reused = run_id_of_next()
    assert second != first
    assert not reused
    assert emulator.stats.batches_created == 2
    assert run_id_of_next() == (second, True)

    model["name"] = "gpt-4.1"
    third, reused = run_id_of_next()
    assert third not in (first, second)
    assert not reused
    assert emulator.stats.batches_created == 3


def test_rematerialising_a_submission_reuses_its_run(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    labels = batchor_sensor_assets(
        name="labels",
        job=day_job,
        destination=str(tmp_path / "out" / "{partition_key}.jsonl"),
        partitions_def=DAYS,
    )
    resources = {"batchor": resource}

    def submit(**kwargs: Any) -> dict[str, object]:
        outcome = materialize(
            labels.assets,
            selection=[labels.submit.key],
            partition_key=_DAY,
            resources=resources,
            instance=instance,
            **kwargs,
        )
        assert outcome.success
        return _metadata(instance, outcome.run_id)

    run_id = submit()["batchor/run_id"]
    assert emulator.stats.batches_created == 3
    # In flight or finished, the same job under the same partition is the same run.
    assert submit()[REUSED_RUN_KEY] == run_id
    assert emulator.stats.batches_created == 3
    assert submit(run_config=_rerun("labels_submission"))["batchor/run_id"] != run_id
    assert emulator.stats.batches_created == 6
