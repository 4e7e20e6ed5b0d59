"""From the CLI, a ``run`` or ``start`` that fails on its input, its artifact location or
its API key says so in one line and leaves no run behind: the same command, the cause
fixed, starts cleanly under the same run id."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchor import BatchRunner
from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line
from tests.core.test_start_atomic import FIELD_LIMIT, mode_bits_enforced

RUN = ["run", "--emulate", "--poll-interval", "0.05"]
GOOD: list[dict[str, object]] = [{"id": f"r{i}", "text": f"text of r{i}"} for i in range(12)]


def _csv(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(["id,text", *lines]) + "\n")


def _good_csv(path: Path) -> None:
    _csv(path, [f"{r['id']},{r['text']}" for r in GOOD])


def _jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _parquet(path: Path, ids: list[str | None]) -> None:
    pq.write_table(pa.table({"id": ids, "text": [f"t{i}" for i in range(len(ids))]}), path)


Writer = Callable[[Path], object]
# name: (input file, the bad version, the fixed version, what the error line names)
CASES: dict[str, tuple[str, Writer, Writer, str]] = {
    "bad CSV row": (
        "e.csv",
        lambda p: p.write_text("id,text\nr1,a\n,b\n"),  # the issue's own repro
        lambda p: p.write_text("id,text\nr1,a\nr2,b\n"),
        "e.csv row 2",
    ),
    "missing JSONL id": (
        "e.jsonl",
        lambda p: _jsonl(p, [GOOD[0], {"text": "no id"}, *GOOD[1:]]),
        lambda p: _jsonl(p, GOOD),
        "e.jsonl line 2",
    ),
    "null Parquet id": (
        "e.parquet",
        lambda p: _parquet(p, ["a", "b", None, "d"]),
        lambda p: _parquet(p, ["a", "b", "c", "d"]),
        "e.parquet row 3",
    ),
    "ragged CSV row": (
        "e.csv",
        lambda p: _csv(p, ["r1,a", "r2,b,c", "r3,d"]),
        lambda p: _csv(p, ["r1,a", "r2,b", "r3,d"]),
        "e.csv row 2",
    ),
    "lone surrogate": (
        "e.jsonl",
        lambda p: _jsonl(p, [*GOOD[:3], {"id": "s", "text": "half \ud800"}]),
        lambda p: _jsonl(p, [*GOOD[:3], {"id": "s", "text": "whole"}]),
        "e.jsonl",
    ),
    "CSV field-size limit": (
        "e.csv",
        lambda p: _csv(p, ["r1,a", "r2," + "x" * (FIELD_LIMIT + 1)]),
        _good_csv,
        "e.csv",
    ),
}


def assert_no_run(run_id: str) -> None:
    """The default store (under the working directory) holds no such run, nor artifacts."""
    with BatchRunner("sqlite:///.batchor/batchor.db", ".batchor/artifacts") as runner:
        assert runner.store.get_run(run_id) is None
        assert list(runner.artifacts.keys(f"runs/{run_id}")) == []


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_leaves_no_run_and_the_fixed_one_starts_cleanly(
    tmp_path: Path, invoke: Invoke, case: str
) -> None:
    name, bad, fixed, says = CASES[case]
    bad(tmp_path / name)
    args = [*RUN, name, *JOB, "--run-id", "X"]
    assert says in one_error_line(invoke(*args), 2)
    assert_no_run("X")
    assert "no run 'X'" in one_error_line(invoke("status", "X"), 2)

    fixed(tmp_path / name)
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    assert "started from a different input" not in result.stderr
    assert Path(".batchor/results/X.jsonl").is_file()


def test_a_read_only_artifact_directory_is_one_line_and_leaves_no_run(
    tmp_path: Path, invoke: Invoke
) -> None:
    _good_csv(tmp_path / "in.csv")
    artifacts = tmp_path / "ro"
    artifacts.mkdir()
    artifacts.chmod(0o500)
    args = [*RUN, "in.csv", *JOB, "--run-id", "ro", "--artifacts", "ro"]
    try:
        with mode_bits_enforced(artifacts):
            message = one_error_line(invoke(*args), 2)
            assert f"artifact location {artifacts.resolve()}" in message
            assert "Permission denied" in message
            with BatchRunner("sqlite:///.batchor/batchor.db", "ro") as runner:
                assert runner.store.get_run("ro") is None
            artifacts.chmod(0o700)
            result = invoke(*args)
    finally:
        artifacts.chmod(0o700)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("command", ["run", "start"])
def test_a_missing_api_key_names_the_variable_and_emulate_and_leaves_no_run(
    tmp_path: Path, invoke: Invoke, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _good_csv(tmp_path / "in.csv")
    args = [command, "in.csv", *JOB, "--run-id", "k"]
    message = one_error_line(invoke(*args), 2)
    assert "OPENAI_API_KEY environment variable" in message
    assert "--emulate" in message
    assert "OpenAIProviderConfig" not in message
    assert "api_key=" not in message
    assert_no_run("k")

    if command == "run":
        result = invoke(*args, "--emulate")
        assert result.exit_code == 0, result.stderr
        return
    with OpenAIBatchEmulator() as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        started = invoke(*args)
        assert started.exit_code == 0, started.stderr
        waited = invoke("wait", "k", "--poll-interval", "0.05")
        assert waited.exit_code == 0, waited.stderr


def test_waiting_on_a_live_run_without_a_key_names_the_variable(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _good_csv(tmp_path / "in.csv")
    with OpenAIBatchEmulator(phase_seconds=30) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        started = invoke("start", "in.csv", *JOB, "--run-id", "w")
        assert started.exit_code == 0, started.stderr
        monkeypatch.delenv("OPENAI_API_KEY")
        message = one_error_line(invoke("wait", "w", "--timeout", "5"), 1)
    assert message.startswith("error: no OpenAI API key: set the OPENAI_API_KEY environment")


def test_memory_artifacts_with_the_durable_store_are_one_line_and_leave_no_run(
    tmp_path: Path, invoke: Invoke
) -> None:
    _good_csv(tmp_path / "in.csv")
    args = [*RUN, "in.csv", *JOB, "--run-id", "m"]
    message = one_error_line(invoke(*args, "--artifacts", "memory://batchor-cli/art"), 2)
    assert "memory://" in message
    assert "store" in message
    assert_no_run("m")
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
