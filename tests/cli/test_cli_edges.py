"""The CLI at its edges: an export never overwrites what it did not write, an absurd run id
is not echoed whole, SIGTERM stops a command as SIGINT does, and ``run --timeout`` gives up
on a provider that is down. Real files, real processes, the real emulator."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchor import BatchRunner, ConfigurationError
from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed, write_csv

BATCHOR = Path(sys.executable).with_name("batchor")


@pytest.fixture
def finished(tmp_path: Path, invoke: Invoke) -> str:
    """A completed run of 3 items in ./.batchor."""
    write_csv(tmp_path / "in.csv", ["r0", "r1", "r2"])
    ran = invoke("run", "in.csv", *JOB, "--run-id", "done", "--emulate", "--poll-interval", "0.05")
    assert ran.exit_code == 0, ran.stderr
    return "done"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---- export-artifacts ----------------------------------------------------------------


def test_export_onto_a_file_is_refused_even_with_force(
    tmp_path: Path, invoke: Invoke, finished: str
) -> None:
    (tmp_path / "audit").write_text("my notes\n")
    for extra in ([], ["--force"]):
        refused = invoke("export-artifacts", finished, "audit", *extra)
        message = one_error_line(refused, 2)
        assert "'audit' is a file" in message
        assert "NotADirectoryError" not in message
    assert (tmp_path / "audit").read_text() == "my notes\n"


def test_export_into_a_non_empty_directory_needs_force(
    tmp_path: Path, invoke: Invoke, finished: str
) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "notes.txt").write_text("mine\n")
    refused = invoke("export-artifacts", finished, "audit")
    message = one_error_line(refused, 2)
    assert "'audit' is not empty" in message
    assert "--force" in message
    assert _tree(audit) == {"notes.txt": b"mine\n"}  # nothing written

    forced = invoke("export-artifacts", finished, "audit", "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    manifest = json.loads((audit / "manifest.json").read_text())
    assert manifest["run_id"] == finished
    assert parsed(forced)["files"] == len(manifest["files"]) > 0
    assert (audit / "notes.txt").read_text() == "mine\n"


def test_force_never_replaces_a_foreign_manifest(
    tmp_path: Path, invoke: Invoke, finished: str
) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "manifest.json").write_text('{"mine": true}\n')
    for extra in ([], ["--force"]):
        refused = invoke("export-artifacts", finished, "audit", *extra)
        assert "'audit'" in one_error_line(refused, 2)
    assert "not a batchor manifest" in refused.stderr
    assert _tree(audit) == {"manifest.json": b'{"mine": true}\n'}  # nothing written


def test_force_replaces_an_earlier_export_of_the_run_but_not_an_edited_file(
    tmp_path: Path, invoke: Invoke, finished: str
) -> None:
    first = invoke("export-artifacts", finished, "audit")
    assert first.exit_code == 0, first.stderr
    assert "'audit' is not empty" in one_error_line(
        invoke("export-artifacts", finished, "audit"), 2
    )
    again = invoke("export-artifacts", finished, "audit", "--force")
    assert again.exit_code == 0, again.stderr

    manifest = json.loads((tmp_path / "audit/manifest.json").read_text())
    edited = tmp_path / "audit" / manifest["files"][0]["path"]
    edited.write_text("edited by hand\n")
    before = _tree(tmp_path / "audit")
    refused = invoke("export-artifacts", finished, "audit", "--force")
    message = one_error_line(refused, 2)
    assert manifest["files"][0]["path"] in message
    assert "did not write" in message
    assert _tree(tmp_path / "audit") == before


def test_force_never_mixes_two_runs_in_one_export(
    tmp_path: Path, invoke: Invoke, finished: str
) -> None:
    write_csv(tmp_path / "other.csv", ["o0"])
    ran = invoke("run", "other.csv", *JOB, "--run-id", "other", "--emulate")
    assert ran.exit_code == 0, ran.stderr
    assert invoke("export-artifacts", "other", "audit").exit_code == 0
    before = _tree(tmp_path / "audit")
    refused = invoke("export-artifacts", finished, "audit", "--force")
    assert "the export of run 'other'" in one_error_line(refused, 2)
    assert _tree(tmp_path / "audit") == before


def test_export_to_an_object_store_follows_the_same_rule(tmp_path: Path, finished: str) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    with BatchRunner() as runner:
        run = runner.get_run(finished)
        run.export_artifacts("memory://edges-audit/a")
        with pytest.raises(ConfigurationError, match="'memory://edges-audit/a' is not empty"):
            run.export_artifacts("memory://edges-audit/a")
        assert run.export_artifacts("memory://edges-audit/a", force=True).files > 0

        memory.pipe("/edges-audit/b/manifest.json", b"{}")
        with pytest.raises(ConfigurationError, match="not a batchor manifest"):
            run.export_artifacts("memory://edges-audit/b", force=True)
        assert memory.ls("/edges-audit/b", detail=False) == ["/edges-audit/b/manifest.json"]

        memory.pipe("/edges-audit/c", b"an object")
        with pytest.raises(ConfigurationError, match="'memory://edges-audit/c' is a file"):
            run.export_artifacts("memory://edges-audit/c", force=True)
        with pytest.raises(ConfigurationError, match="is a file"):
            run.export_artifacts(tmp_path / "in.csv", force=True)
    memory.rm("/edges-audit", recursive=True)


# ---- an absurd run id ----------------------------------------------------------------


def test_a_huge_run_id_is_cut_in_messages(tmp_path: Path, invoke: Invoke, finished: str) -> None:
    huge = "a" * 10_000
    write_csv(tmp_path / "in.csv", ["r0"])
    for args in (
        ["status", huge],
        ["wait", huge],
        ["export-artifacts", huge, "audit"],
        ["run", "in.csv", *JOB, "--run-id", huge, "--emulate"],
    ):
        message = one_error_line(invoke(*args), 2)
        assert len(message) < 300, args
        assert "a" * 60 + "… (10000 characters)" in message
        assert "a" * 61 not in message


# ---- SIGINT and SIGTERM --------------------------------------------------------------


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBatchEmulator]:
    """An emulator whose batches take about 9 s, for a subprocess to be stopped mid-run even
    when a loaded machine is slow to start it."""
    with OpenAIBatchEmulator(phase_seconds=3.0) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        yield emu


def _stopped(args: list[str], signum: int) -> tuple[int, str]:
    """Run ``batchor -v ARGS`` in a process, send it ``signum`` once it talks to the provider
    (its first HTTP request is logged), and return its exit code and last stderr line."""
    proc = subprocess.Popen(
        [str(BATCHOR), "-v", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    while True:
        line = lines.get(timeout=60)
        seen.append(line)
        assert line, "".join(seen)  # ended before it was signalled
        if "HTTP Request" in line:
            break
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    tail = [x for x in seen if x.strip()][-1]
    return code, tail.rstrip("\n")


@pytest.mark.slow  # a CLI child process signalled mid-run, then resumed
@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_a_stopped_run_says_how_to_resume_and_resumes(
    tmp_path: Path,
    invoke: Invoke,
    slow: OpenAIBatchEmulator,
    signum: signal.Signals,
    code: int,
    said: str,
) -> None:
    write_csv(tmp_path / "in.csv", ["s0", "s1"])
    args = ["run", "in.csv", *JOB, "--poll-interval", "0.2"]
    exit_code, last = _stopped(args, signum)
    assert exit_code == code, last
    assert last.startswith(f"error: {said}; run 'run-"), last
    run_id = last.split("'")[1]
    assert last.endswith(f"run the same command again with --run-id {run_id} to resume it")

    resumed = invoke(*args, "--run-id", run_id, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert parsed(resumed)["items"]["completed"] == 2
    assert len(slow.batches()) == 1  # resumed, not bought again


@pytest.mark.slow  # a CLI child process signalled mid-wait, then resumed
def test_a_terminated_wait_says_how_to_resume(
    tmp_path: Path, invoke: Invoke, slow: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", ["w0", "w1"])
    started = invoke("start", "in.csv", *JOB, "--run-id", "term")
    assert started.exit_code == 0, started.stderr
    exit_code, last = _stopped(["wait", "term", "--poll-interval", "0.2"], signal.SIGTERM)
    assert exit_code == 143, last
    assert last == (
        "error: terminated (SIGTERM); the run is durable: run the same command again to resume"
    )
    waited = invoke("wait", "term", "--poll-interval", "0.2", "--json")
    assert waited.exit_code == 0, waited.stderr
    assert parsed(waited)["items"]["completed"] == 2


# ---- run --timeout -------------------------------------------------------------------


def test_run_timeout_gives_up_on_a_provider_that_is_down(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The autouse fixture points OPENAI_BASE_URL at a closed port.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    write_csv(tmp_path / "in.csv", ["d0", "d1"])
    began = time.monotonic()
    result = invoke("run", "in.csv", *JOB, "--run-id", "down", "--timeout", "2")
    took = time.monotonic() - began
    message = one_error_line(result, 1)
    assert message.startswith("error: run 'down' is still running after 2 s (0/2 items done); ")
    assert "run the same command again to resume it" in message
    # The deadline interrupts the start and any wait; a provider call under way (the SDK's
    # retries, ~7 s at most) ends first.
    assert 2 <= took < 14, took

    ok = invoke("status", "down", "--json")
    assert parsed(ok)["status"] == "running"  # the run goes on

    began = time.monotonic()
    waited = invoke("wait", "down", "--timeout", "1")
    assert "after 1 s (0/2 items done); it goes on: wait again" in one_error_line(waited, 1)
    assert time.monotonic() - began < 13


def test_run_timeout_is_not_hit_by_a_run_that_ends_in_time(tmp_path: Path, invoke: Invoke) -> None:
    write_csv(tmp_path / "in.csv", ["t0", "t1"])
    ran = invoke("run", "in.csv", *JOB, "--emulate", "--timeout", "60", "--poll-interval", "0.05")
    assert ran.exit_code == 0, ran.stderr
