"""End to end against Dagster's real services: `dagster dev` (webserver, daemon, code server,
as docs/how-to/dagster.md runs it) serves the example's sensor-driven mode against the
emulator. A submission launched through the webserver's GraphQL API runs on the daemon's run
queue; the daemon's sensor ticks see the batch end and launch the collect run; launching the
submission again with the same input reuses the run and buys no second batch."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchor_dagster import REUSED_RUN_KEY, RUN_ID_KEY
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import TickStatus

from batchor.testing import OpenAIBatchEmulator
from tests.services import Service, free_port, start_group

pytestmark = [
    pytest.mark.slow,
    # dagster_graphql's client calls gql the old way; not ours to fix.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
DEFS = Path(__file__).with_name("services_defs.py")
LOCATION = DEFS.name
DAY = "2026-11-23"
SUBMIT = AssetKey("review_labels_async_submission")
COLLECT = AssetKey("review_labels_async")
SENSOR = "review_labels_async_sensor"


class _Dev(Service):
    """A `dagster dev` process group (webserver, daemon, code server on loopback) and the ways
    to watch it."""

    tail_lines = 60

    def __init__(self, home: Path, cwd: Path, env: dict[str, str]) -> None:
        self.home, self.port = home, free_port()
        dagster = Path(sys.executable).parent / "dagster"
        command = [str(dagster), "dev", "-f", str(DEFS), "-d", str(ROOT)]
        command += ["-h", "127.0.0.1", "-p", str(self.port)]
        log = cwd / "dagster-dev.log"
        super().__init__("dagster dev", start_group(command, env, log, cwd), log)

    def server_info(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.port}/server_info"
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.load(response))
        except OSError:
            return None

    def launch(self, assets: list[AssetKey]) -> str:
        """Launch a run of ``assets`` for the day through the webserver (the run queue),
        once the code location has loaded."""
        from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)
        errors: list[str] = []

        def submit() -> str | None:
            try:
                return client.submit_job_execution(
                    "__ASSET_JOB",
                    repository_location_name=LOCATION,
                    repository_name="__repository__",
                    asset_selection=assets,
                    tags={"dagster/partition": DAY},
                )
            except DagsterGraphQLClientError as exc:
                errors.append(str(exc))
                return None

        return self.wait_for("launching a run", submit, 90, lambda: "; ".join(errors[-3:]))


@pytest.fixture
def dev(tmp_path: Path, emulator_http: OpenAIBatchEmulator) -> Iterator[_Dev]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "EXAMPLE_DATA_DIR": str(tmp_path / "data"),
        "BATCHOR_STORE": f"sqlite:///{tmp_path}/batchor.db",
        "BATCHOR_ARTIFACTS": str(tmp_path / "artifacts"),
        "OPENAI_BASE_URL": emulator_http.base_url,
        "OPENAI_API_KEY": emulator_http.api_key,
    }
    dev = _Dev(home, tmp_path, env)
    try:
        yield dev
    finally:
        dev.stop()  # SIGINT to the group (dagster dev shuts its children down), then SIGKILL


@pytest.fixture
def emulator_http() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator(phase_seconds=0.5) as emulator:
        yield emulator


def _run_status(instance: DagsterInstance, run_id: str) -> DagsterRunStatus | None:
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
        return None
    return run.status


def _latest(instance: DagsterInstance, key: AssetKey) -> dict[str, Any] | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[DAY]), limit=1
    ).records
    mat = records[0].asset_materialization if records else None
    if mat is None:
        return None
    return {"run": records[0].run_id, **{k: v.value for k, v in mat.metadata.items()}}


def _describe(instance: DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    events = [
        f"{e.dagster_event.event_type_value if e.dagster_event else 'LOG'}: {e.message[:200]}"
        for e in instance.all_logs(run_id)
    ]
    status = None if run is None else run.status.value
    return f"run status {status}; its last events:\n" + "\n".join(events[-25:])


def _ticks_since(instance: DagsterInstance, since: float) -> list[Any] | None:
    """The sensor's finished ticks that started after ``since`` (None if there are none)."""
    for state in instance.all_instigator_state():
        if state.instigator_name == SENSOR:
            done = [TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE]
            ticks = instance.get_ticks(
                state.instigator_origin_id, state.selector_id, after=since, statuses=done
            )
            return list(ticks) or None
    return None


def _errors(instance: DagsterInstance, run_id: str) -> str:
    return "\n".join(
        str(e.dagster_event.event_specific_data)
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None and e.dagster_event.is_failure
    )


@pytest.mark.timeout(420)
def test_dagster_dev_runs_the_sensor_example_and_a_rerun_buys_nothing(
    dev: _Dev, emulator_http: OpenAIBatchEmulator
) -> None:
    began = time.monotonic()
    info = dev.wait_for("the webserver answering /server_info", dev.server_info, 150)
    assert info["dagster_webserver_version"]
    started = time.monotonic()

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dev.home))) as instance:

        def finish(run_id: str) -> None:
            status = dev.wait_for(
                f"run {run_id} ending",
                lambda: _run_status(instance, run_id),
                150,
                lambda: _describe(instance, run_id),
            )
            assert status is DagsterRunStatus.SUCCESS, (_errors(instance, run_id), dev.log_tail())

        submit_run = dev.launch([AssetKey("reviews"), SUBMIT])
        finish(submit_run)
        submitted = _latest(instance, SUBMIT)
        assert submitted is not None
        assert submitted["run"] == submit_run
        run_id = submitted[RUN_ID_KEY]
        assert REUSED_RUN_KEY not in submitted

        # The daemon's sensor ticks poll the run and launch the collect run once it ended.
        collected = dev.wait_for(
            "the sensor's collect run materialising review_labels_async",
            lambda: _latest(instance, COLLECT),
            150,
            lambda: f"batches created: {emulator_http.stats.batches_created}",
        )
        finish(collected["run"])
        collect_run = instance.get_run_by_id(collected["run"])
        assert collect_run is not None
        assert collect_run.tags.get(RUN_ID_KEY) == run_id
        assert collect_run.tags.get("dagster/sensor_name") == SENSOR
        assert collected[RUN_ID_KEY] == run_id
        assert collected["batchor/completed"] == 20
        assert Path(str(collected["batchor/results_uri"])).is_file()
        assert emulator_http.stats.batches_created == 1
        ran = time.monotonic()

        # Same partition, same input (the reviews are rewritten identically): reused, no batch.
        again = dev.launch([AssetKey("reviews"), SUBMIT])
        finish(again)
        resubmitted = _latest(instance, SUBMIT)
        assert resubmitted is not None
        assert resubmitted["run"] == again
        assert resubmitted[REUSED_RUN_KEY] == run_id
        assert emulator_http.stats.batches_created == 1
        assert set(emulator_http.stats.batches_by_metadata("batchor_batch_key").values()) == {1}
        reran = time.monotonic()

        # The sensor sees the resubmission of the ended run, and does not collect it twice.
        since = time.time()
        ticks = dev.wait_for(
            "a sensor tick after the rerun", lambda: _ticks_since(instance, since), 60
        )
        assert all(t.status is not TickStatus.FAILURE for t in ticks), [t.error for t in ticks]
        sensor_runs = instance.get_runs(filters=RunsFilter(tags={"dagster/sensor_name": SENSOR}))
        assert [r.run_id for r in sensor_runs] == [collected["run"]]
        checked = time.monotonic()

    timings = {
        "start-up": started - began,
        "run": ran - started,
        "rerun": reran - ran,
        "sensor tick after the rerun": checked - reran,
        "total": checked - began,
    }
    print("dagster dev e2e timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
