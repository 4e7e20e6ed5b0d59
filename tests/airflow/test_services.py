"""The example DAG on Airflow's real services, as a user runs it: the api-server, scheduler,
triggerer and dag-processor (what ``airflow standalone`` starts), on a free loopback port with
their own AIRFLOW_HOME; the DAG triggered by hand with ``airflow dags trigger`` (no logical
date), deferred to the triggerer, finished with every row in the results file; then a task
clear through the REST API re-runs the task without buying a second provider batch."""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from batchor.testing import OpenAIBatchEmulator
from tests.airflow.helpers import jsonl_ids
from tests.services import Service, free_port, stop_group, tail, wait_for

pytest.importorskip("airflow")

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "airflow"
AIRFLOW = Path(sys.executable).with_name("airflow")
DAG_ID = "batchor_classify_tickets"
TASK_ID = "classify"
FINISHED = {"success", "failed", "upstream_failed", "skipped", "removed"}

T = TypeVar("T")


class AirflowServices:
    """Airflow's four services, each in its own process group and log file, on loopback only
    (the scheduler's and triggerer's log servers, which listen on every interface, are off),
    and a REST client for the api-server."""

    COMPONENTS = (
        ("api-server", ()),
        ("scheduler", ("--skip-serve-logs",)),
        ("triggerer", ("--skip-serve-logs",)),
        ("dag-processor", ()),
    )

    def __init__(self, root: Path, emulator: OpenAIBatchEmulator) -> None:
        self.root = root
        self.home = root / "airflow_home"
        self.dags = root / "dags"
        self.results = root / "results"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        self.services: dict[str, Service] = {}
        self.client = httpx.Client(base_url=self.base, timeout=10)
        self.home.mkdir()
        self.dags.mkdir()
        for name in ("classify_tickets.py", "tickets.csv"):
            shutil.copy(EXAMPLE / name, self.dags / name)
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        connection = {
            "conn_type": "openai",
            "host": emulator.base_url,
            "password": emulator.api_key,
            "extra": {
                "batchor_store": f"sqlite:///{root}/batchor.db",
                "batchor_artifacts": str(root / "artifacts"),
            },
        }
        # Nothing of the test session's own Airflow, store or provider settings leaks in.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "OPENAI_", "BATCHOR_", "_AIRFLOW"))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(connection),
                # Only the connection leads to the emulator: the environment leads nowhere.
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "BATCHOR_EXAMPLE_RESULTS": str(self.results),
                # Not shorter: Airflow 3.3.2's scheduler can fail a task whose trigger fires
                # before it processed the deferring worker's exit (about 5 s here), with "finished
                # with state success, but the task instance's state attribute is queued".
                "BATCHOR_EXAMPLE_POLL_INTERVAL": "10",
                "NO_COLOR": "1",
            }
        )
        self.env = env

    # -- processes ---------------------------------------------------------------------

    def log(self, component: str) -> Path:
        return self.root / f"{component}.log"

    def start(self) -> None:
        """Migrate the metadata DB, then start the four services."""
        self.cli("db", "migrate", timeout=180)
        for component, flags in self.COMPONENTS:
            command = [str(AIRFLOW), component, *flags]
            self.services[component] = Service.start(
                f"airflow {component}", command, self.env, self.log(component), self.root
            )

    def stop(self) -> None:
        """SIGTERM each service's process group (and any descendant that left it), then
        SIGKILL what is left."""
        self.client.close()
        stop_group(*(s.proc for s in self.services.values()), first=signal.SIGTERM, grace=15)

    def cli(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [str(AIRFLOW), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # -- diagnostics and waiting -------------------------------------------------------

    def all_logs(self) -> str:
        """Every service's and task's log, concatenated."""
        paths = [self.log(c) for c, _ in self.COMPONENTS] + sorted(self.home.glob("logs/**/*.log"))
        return "\n".join(p.read_text(errors="replace") for p in paths if p.exists())

    def diagnostics(self) -> str:
        parts = []
        for component, _ in self.COMPONENTS:
            parts += [f"--- {component} (tail of {self.log(component)}) ---"]
            parts += [tail(self.log(component), 15, without="request finished")]
        task_logs = sorted(
            self.home.glob("logs/dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime
        )
        for path in task_logs[-2:]:
            parts += [f"--- {path.relative_to(self.home)} ---", tail(path, 20)]
        return "\n".join(parts)

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float) -> T:
        """Call ``probe`` until it returns something, failing after ``timeout`` seconds (or
        when a service exits) with the tail of the Airflow logs."""
        return wait_for(
            what,
            probe,
            timeout,
            list(self.services.values()),
            logs=self.diagnostics,
            retry_on=(httpx.HTTPError, KeyError, ValueError),
            interval=0.25,
        )

    # -- REST API ----------------------------------------------------------------------

    def healthy(self) -> bool | None:
        health = self.client.get("/api/v2/monitor/health").json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return True if all(health[p]["status"] == "healthy" for p in parts) else None

    def login(self) -> bool | None:
        response = self.client.post(
            "/auth/token", json={"username": "admin", "password": self.password}
        )
        if response.status_code != 201:
            return None
        self.client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        return True

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, f"/api/v2{path}", **kwargs)
        response.raise_for_status()
        return response.json()

    def task_instance(self, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"))


@pytest.fixture
def timings(capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, float]]:
    """Seconds per phase, printed to the terminal at the end of the test (pass or fail)."""
    figures: dict[str, float] = {}
    began = time.monotonic()
    yield figures
    figures.setdefault("total", time.monotonic() - began)
    with capsys.disabled():
        shown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in figures.items())
        print(f"\n[airflow services e2e] {shown}")


@pytest.fixture
def airflow(tmp_path: Path, emulator: OpenAIBatchEmulator) -> Iterator[AirflowServices]:
    services = AirflowServices(tmp_path, emulator)
    try:
        yield services
    finally:
        services.stop()


@pytest.mark.timeout(280)
def test_manual_trigger_defers_succeeds_and_a_clear_buys_nothing(
    airflow: AirflowServices, emulator: OpenAIBatchEmulator, timings: dict[str, float]
) -> None:
    began = time.monotonic()

    # Start-up: every component healthy and the example DAG parsed and unpaused.
    airflow.start()
    airflow.wait_for("the api-server and healthy components", airflow.healthy, timeout=120)
    airflow.wait_for("a REST API token", airflow.login, timeout=30)
    dag = airflow.wait_for(
        f"the dag-processor to parse {DAG_ID}",
        lambda: airflow.api("GET", f"/dags/{DAG_ID}"),
        timeout=60,
    )
    assert dag["is_paused"] is False
    timings["start-up"] = time.monotonic() - began

    # Run: triggered by hand, as `airflow dags trigger` does by default (no logical date).
    t_run = time.monotonic()
    output = airflow.cli("dags", "trigger", DAG_ID, "--output", "json")
    (triggered,) = json.loads(output.strip().splitlines()[-1])  # after its log lines
    run_id = triggered["dag_run_id"]
    assert triggered["logical_date"] is None
    seen: list[str] = []

    def finished() -> dict[str, Any] | None:
        ti = airflow.task_instance(run_id)
        if not seen or seen[-1] != ti["state"]:
            seen.append(str(ti["state"]))
        dag_run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        return dag_run if dag_run["state"] in ("success", "failed") else None

    dag_run = airflow.wait_for(f"DAG run {run_id} to finish", finished, timeout=150)
    timings["run"] = time.monotonic() - t_run
    ti = airflow.task_instance(run_id)
    assert ti["state"] == "success", f"states {seen}\n{airflow.diagnostics()}"
    assert dag_run["state"] == "success"
    assert dag_run["logical_date"] is None
    assert "deferred" in seen, f"the task never deferred: states {seen}"
    assert ti["try_number"] == 1
    # The triggerer ran the trigger and fired its event; nothing logged the key.
    (trigger_log,) = airflow.home.glob(f"logs/dag_id={DAG_ID}/**/attempt=1.log.trigger.*.log")
    trigger_text = trigger_log.read_text()
    assert "Trigger fired event" in trigger_text, trigger_text
    assert "'reason': 'poll'" in trigger_text or "'reason': 'terminal'" in trigger_text
    assert emulator.api_key not in airflow.all_logs()

    (results,) = airflow.results.glob("tickets-*.jsonl")
    assert results.name == f"tickets-{run_id.replace(':', '')}.jsonl"
    with (EXAMPLE / "tickets.csv").open() as fh:
        rows = sorted(row["ticket_id"] for row in csv.DictReader(fh))
    assert jsonl_ids(results) == rows
    # The handle in XCom (multiple_outputs: one entry per key) names the run and the file.
    xcom = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries"
    batchor_run = airflow.api("GET", f"{xcom}/run_id")["value"]
    assert airflow.api("GET", f"{xcom}/uri")["value"] == str(results)
    assert batchor_run in trigger_text
    per_key = emulator.stats.batches_by_metadata("batchor_batch_key")
    assert sorted(per_key.values()) == [1, 1]  # 20 rows, 10 per batch
    created = emulator.stats.batches_created

    # Clear: the task runs again, attaches to its finished run and buys nothing.
    t_clear = time.monotonic()
    cleared = airflow.api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [TASK_ID],
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    assert [t["task_id"] for t in cleared["task_instances"]] == [TASK_ID]

    seen_again: list[tuple[int, str]] = []

    def rerun() -> dict[str, Any] | None:
        ti = airflow.task_instance(run_id)
        if not seen_again or seen_again[-1] != (ti["try_number"], ti["state"]):
            seen_again.append((ti["try_number"], str(ti["state"])))
        if ti["try_number"] != 2 or ti["state"] not in FINISHED:
            return None
        dag_run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        return ti if dag_run["state"] in ("success", "failed") else None

    again = airflow.wait_for(f"the cleared task {TASK_ID} to run again", rerun, timeout=90)
    timings["clear/rerun"] = time.monotonic() - t_clear
    timings["total"] = time.monotonic() - began
    assert again["state"] == "success", f"{seen_again}\n{airflow.diagnostics()}"
    # The second try ran execute on a worker: it attached to the finished run.
    (second,) = airflow.home.glob(f"logs/dag_id={DAG_ID}/**/attempt=2.log")
    assert f"batchor run {batchor_run} completed: 20/20 done" in second.read_text(), seen_again
    assert emulator.stats.batches_created == created
    assert emulator.stats.batches_by_metadata("batchor_batch_key") == per_key
    assert list(airflow.results.glob("tickets-*.jsonl")) == [results]
    assert jsonl_ids(results) == rows
