"""The non-blocking mode: the submit asset returns at once, the sensor polls across ticks and
requests the collect asset with run_key = the batchor run id, and the collect asset writes
the results; the definitions load."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from batchor_dagster import BatchorResource, batchor_sensor_assets
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    build_sensor_context,
    materialize,
)

from batchor.testing import OpenAIBatchEmulator

from .conftest import DAYS, SECRET, day_job
from .test_assets import _metadata


def test_sensor_collects_a_run_across_ticks(
    resource: BatchorResource, instance: DagsterInstance, tmp_path: Path
) -> None:
    with OpenAIBatchEmulator(api_key=SECRET, phase_seconds=0.3) as emulator:
        resource = BatchorResource(
            **{**resource.model_dump(), "openai_base_url": emulator.base_url}
        )
        labels = batchor_sensor_assets(
            name="labels",
            job=day_job,
            destination=str(tmp_path / "out" / "{partition_key}.parquet"),
            partitions_def=DAYS,
            tick_budget_seconds=20,
        )
        defs = Definitions(
            assets=labels.assets, sensors=[labels.sensor], resources={"batchor": resource}
        )
        Definitions.validate_loadable(defs)
        resources = {"batchor": resource}

        submitted = materialize(
            labels.assets,
            selection=[labels.submit.key],
            partition_key="2026-11-24",
            resources=resources,
            instance=instance,
        )
        assert submitted.success
        run_id = _metadata(instance, submitted.run_id)["batchor/run_id"]
        assert emulator.stats.batches_created == 3

        cursor, ticks, requests = None, 0, []
        deadline = time.monotonic() + 60
        while not requests:
            assert time.monotonic() < deadline
            context = build_sensor_context(
                instance=instance, cursor=cursor, resources=resources, definitions=defs
            )
            started = time.monotonic()
            data = labels.sensor.evaluate_tick(context)
            assert time.monotonic() - started < 20
            cursor, ticks, requests = data.cursor, ticks + 1, data.run_requests or []
            if not requests:
                time.sleep(0.3)
        assert ticks >= 2  # the run was still in flight at the first tick
        [request] = requests
        assert isinstance(request, RunRequest)
        assert request.run_key == run_id
        assert request.partition_key == "2026-11-24"

        # A further tick requests nothing again.
        again = labels.sensor.evaluate_tick(
            build_sensor_context(
                instance=instance, cursor=cursor, resources=resources, definitions=defs
            )
        )
        assert not again.run_requests

        collected = materialize(
            labels.assets,
            selection=[labels.collect.key],
            partition_key=request.partition_key,
            tags=request.tags,
            resources=resources,
            instance=instance,
        )
        assert collected.success
        meta = _metadata(instance, collected.run_id)
        assert meta["batchor/run_id"] == run_id
        assert meta["batchor/items"] == {"completed": 12, "failed": 0, "cancelled": 0}
        assert meta["openai.gpt-4.1-mini.total_tokens"] > 0
        assert Path(str(meta["batchor/results_uri"])).name == "2026-11-24.parquet"
        assert emulator.stats.batches_created == 3


def test_a_tick_stops_at_its_budget_and_the_next_tick_goes_on(
    emulator: OpenAIBatchEmulator,
    resource: BatchorResource,
    instance: DagsterInstance,
    tmp_path: Path,
) -> None:
    def define(budget: float) -> Any:
        return batchor_sensor_assets(
            name="labels",
            job=day_job,
            destination=str(tmp_path / "{partition_key}.jsonl"),
            partitions_def=DAYS,
            tick_budget_seconds=budget,
            poll_interval=0.2,
        )

    no_time, enough = define(0.0), define(20.0)
    resources = {"batchor": resource}
    run_ids = set()
    for day in DAYS.get_partition_keys():
        done = materialize(
            enough.assets,
            selection=[enough.submit.key],
            partition_key=day,
            resources=resources,
            instance=instance,
        )
        run_ids.add(_metadata(instance, done.run_id)["batchor/run_id"])

    # Launched by hand, without the sensor's tag, the collect asset collects the
    # partition's latest submission (waiting for it).
    by_hand = materialize(
        enough.assets,
        selection=[enough.collect.key],
        partition_key="2026-11-23",
        resources=resources,
        instance=instance,
    )
    assert _metadata(instance, by_hand.run_id)["batchor/run_id"] in run_ids

    def tick(sensors: Any, cursor: str | None) -> Any:
        defs = Definitions(assets=sensors.assets, sensors=[sensors.sensor], resources=resources)
        context = build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, definitions=defs
        )
        return sensors.sensor.evaluate_tick(context)

    starved = tick(no_time, None)
    assert not starved.run_requests
    assert set(json.loads(starved.cursor)["pending"]) == run_ids  # kept for the next tick

    cursor, requested = starved.cursor, []
    deadline = time.monotonic() + 30
    while len(requested) < 2:
        assert time.monotonic() < deadline
        data = tick(enough, cursor)
        cursor = data.cursor
        requested += data.run_requests
        time.sleep(0.1)
    assert {r.run_key for r in requested} == run_ids
    assert {r.partition_key for r in requested} == set(DAYS.get_partition_keys())
    assert json.loads(cursor)["pending"] == {}
    assert emulator.stats.batches_created == 6
