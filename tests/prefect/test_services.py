"""End to end against Prefect's real server: `prefect server start` on a free loopback port, with
flows run as scripts in their own processes reporting to it (PREFECT_API_URL) and the emulator
serving the OpenAI API. The example flow runs to completion; a collect called right after the
start, before the run has ended, fails as not ready, is retried and succeeds once the run has
ended; a rerun of the example with the same run key is served from Prefect's cache and buys no
second batch. Timings go to the terminal for the closing note.

This test does not use the session's in-process test server (conftest.py): its `_prefect`
fixture is overridden below, and what Prefect recorded is read over the server's REST API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchor.testing import OpenAIBatchEmulator
from tests.services import Service, free_port, start_group, tail

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "prefect"
EXAMPLE = EXAMPLE_DIR / "classify_reviews.py"
FLOW = Path(__file__).with_name("services_flow.py")
REVIEWS = sum(1 for line in (EXAMPLE_DIR / "reviews.jsonl").read_text().splitlines() if line)
EXAMPLE_FLOW = "batchor-run-batch-job"
RUN_KEY = "reviews-e2e"
EARLY_KEY = "reviews-collect-early"
SERVER_START_TIMEOUT = 120.0
FLOW_TIMEOUT = 120.0
RECORD_TIMEOUT = 30.0
"""How long the server may take to record a finished flow's task runs (they arrive as events)."""
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(autouse=True)
def _prefect() -> None:
    """Replaces conftest.py's fixture: no session test server here, this test starts its own."""


class _Server(Service):
    """A `prefect server start` process group on loopback, its log and its REST API."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.env, self.port = env, free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        prefect = Path(sys.executable).parent / "prefect"
        command = [str(prefect), "server", "start", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--analytics-off"]
        self.started_at = time.monotonic()
        super().__init__("prefect server", start_group(command, env, log, cwd), log)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    grace = 15.0  # SIGINT to the process group (the server shuts down its services)

    def stop(self) -> None:
        self.http.close()
        super().stop()

    def healthy(self) -> bool | None:
        try:
            response = self.http.get("/health", timeout=2)
        except httpx.HTTPError:
            return None
        return True if response.status_code == 200 and response.json() is True else None

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, **params: str) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def flow_run_ids(self, flow_name: str) -> set[str]:
        runs = self.post("/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}})
        return {run["id"] for run in runs}

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{flow_run_id}"))

    def task_runs(self, flow_run_id: str) -> dict[str, dict[str, Any]]:
        runs = self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        return {run["name"]: run for run in runs}

    def recorded_task_runs(self, flow_run_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
        """The flow run's task runs once the server has recorded ``names`` in a final state
        (task run states reach the server as events, a moment after the flow process ends)."""

        def final() -> dict[str, dict[str, Any]] | None:
            runs = self.task_runs(flow_run_id)
            done = {n for n, r in runs.items() if r["state"] and r["state"]["type"] in FINAL}
            return runs if names <= done else None

        return self.wait_for(
            f"the server recording the final states of {sorted(names)}",
            final,
            RECORD_TIMEOUT,
            lambda: f"task runs so far: {_states(self.task_runs(flow_run_id))}",
        )

    def state_history(self, task_run_id: str) -> list[str]:
        states = self.get("/task_run_states/", task_run_id=task_run_id)
        states.sort(key=lambda s: s["timestamp"])
        return [str(s["name"]) for s in states]


def _states(runs: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """``{task run name: (state name, run count)}``."""
    return {n: ((r["state"] or {}).get("name", ""), r["run_count"]) for n, r in runs.items()}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    home = tmp_path / "home"
    prefect_home = home / ".prefect"
    prefect_home.mkdir(parents=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_", "BATCHOR_"))
    }
    env.update(
        {
            "HOME": str(home),
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{prefect_home / 'server.db'}"
            ),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    server = _Server(env, tmp_path / "prefect-server.log", tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _run(
    server: _Server, what: str, command: list[str], env: dict[str, str], cwd: Path
) -> tuple[str, str]:
    """Run a flow process to its end; fail with its output and the server's log if it fails or
    takes longer than FLOW_TIMEOUT. Returns its stdout and stderr."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=FLOW_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"{what}: not done within {FLOW_TIMEOUT:.0f} s\nstdout:\n{tail(out)}\n"
            f"stderr:\n{tail(err)}\n{server.log_tail()}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{what}: exit status {proc.returncode}\nstdout:\n{tail(out)}\n"
            f"stderr:\n{tail(err, 80)}\n{server.log_tail()}"
        )
    return out, err


def _new_flow_run(server: _Server, flow_name: str, before: set[str]) -> str:
    new = server.flow_run_ids(flow_name) - before
    assert len(new) == 1, f"expected one new {flow_name} flow run, found {sorted(new)}"
    return new.pop()


def _report(timings: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Print the timings (and what else was measured) past pytest's capture."""
    with capsys.disabled():
        print("\nprefect server end-to-end timings:")
        for name, value in timings.items():
            shown = f"{value:6.1f} s" if isinstance(value, float) else str(value)
            print(f"  {name:<24} {shown}")


@pytest.mark.timeout(360)
def test_prefect_server_runs_the_example_a_collect_before_the_end_and_a_cached_rerun(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timings: dict[str, Any] = {}
    try:
        _scenarios(server, tmp_path, timings)
    finally:
        timings["total"] = time.monotonic() - server.started_at
        _report(timings, capsys)


def _scenarios(server: _Server, tmp_path: Path, timings: dict[str, Any]) -> None:
    server.wait_for("the server answering /api/health", server.healthy, SERVER_START_TIMEOUT)
    timings["server start-up"] = time.monotonic() - server.started_at

    work = tmp_path / "work"  # the flows' working directory: batchor's store and results
    work.mkdir()
    results = work / ".batchor" / "example" / "prefect" / "reviews.jsonl"
    with OpenAIBatchEmulator(phase_seconds=1.0) as emu:
        env = {
            **server.env,
            "PREFECT_API_URL": server.url,
            "OPENAI_BASE_URL": emu.base_url,
            "OPENAI_API_KEY": emu.api_key,
        }

        def run_example(what: str, timing: str) -> str:
            """Run the example flow as its docstring does, with RUN_KEY, timed as ``timing``;
            check that it completed every review; return the id of the flow run it made."""
            t0 = time.monotonic()
            before = server.flow_run_ids(EXAMPLE_FLOW)
            command = [sys.executable, str(EXAMPLE), "--run-key", RUN_KEY]
            out, _ = _run(server, what, command, env, work)
            timings[timing] = time.monotonic() - t0
            assert f"run {RUN_KEY}: completed, {{'completed': {REVIEWS}, 'failed': 0" in out, out
            return _new_flow_run(server, EXAMPLE_FLOW, before)

        # (1) The example flow, as its docstring runs it, to completion.
        first = run_example("the example flow", "example run")
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        assert len(lines) == REVIEWS
        assert {r["status"] for r in lines} == {"completed"}
        assert server.flow_run(first)["state"]["type"] == "COMPLETED"
        names = {f"start-{RUN_KEY}", f"wait-{RUN_KEY}", f"collect-{RUN_KEY}"}
        runs = server.recorded_task_runs(first, names)
        assert {n: _states(runs)[n][0] for n in names} == dict.fromkeys(names, "Completed")
        batches = emu.stats.batches_created
        assert batches >= 1

        # (3) The same flow with the same run key: Prefect's cache answers start and collect,
        # and no batch is bought.
        second = run_example("the cached rerun of the example flow", "cached rerun")
        assert emu.stats.batches_created == batches
        assert len(results.read_text().splitlines()) == REVIEWS
        assert second != first
        assert server.flow_run(second)["state"]["type"] == "COMPLETED"
        states = _states(server.recorded_task_runs(second, names))
        assert states[f"start-{RUN_KEY}"][0] == "Cached", states
        assert states[f"collect-{RUN_KEY}"][0] == "Cached", states

        # (2) A collect called right after the start, before the run has ended: not ready,
        # retried every second, then collected once the run has ended.
        t0 = time.monotonic()
        destination = work / "early.jsonl"
        flow_env = {**env, "PYTHONPATH": str(EXAMPLE_DIR)}  # for classify_reviews:make_job
        out, err = _run(
            server,
            "the collect-before-the-end flow",
            [sys.executable, str(FLOW), EARLY_KEY, str(destination)],
            flow_env,
            work,
        )
        timings["collect before the end"] = time.monotonic() - t0
        report = json.loads(out.strip().splitlines()[-1])
        assert report["state"] == "Completed", report
        assert report["result"]["counts"] == {"completed": REVIEWS, "failed": 0, "cancelled": 0}
        assert len(destination.read_text().splitlines()) == REVIEWS
        assert "RunNotReady" in out + err, "the early collects did not fail as not ready"
        assert emu.stats.batches_created == 2 * batches
        collect = f"collect-{EARLY_KEY}"
        runs = server.recorded_task_runs(report["flow_run_id"], {f"start-{EARLY_KEY}", collect})
        assert runs[collect]["state"]["name"] == "Completed", _states(runs)
        assert runs[collect]["run_count"] > 1, _states(runs)
        history = server.state_history(runs[collect]["id"])
        assert "AwaitingRetry" in history, history
        assert history.count("AwaitingRetry") == runs[collect]["run_count"] - 1, history
        assert history[-1] == "Completed", history
        timings["collect attempts"] = runs[collect]["run_count"]
