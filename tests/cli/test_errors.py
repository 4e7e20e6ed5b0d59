"""Every error is one line on stderr with its documented exit code (2 bad input or usage,
1 anything else), and the top-level help documents the codes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from batchor.stores.open import open_store
from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, write_csv


def test_top_level_help_documents_the_exit_codes(invoke: Invoke) -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes:" in result.stdout
    for line in ("0    success", "1    any other error", "2    bad input or usage", "3    run"):
        assert line in result.stdout
    for command in ("run", "start", "wait", "status", "list", "pause", "resume", "cancel", "db"):
        assert f"  {command} " in result.stdout


def _inputs(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", ["a0", "a1"])
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "b0", "body": "no text field"}) + "\n")
    (tmp_path / "same.jsonl").write_text(json.dumps({"id": "a0", "text": "t"}) + "\n")
    (tmp_path / "broken.parquet").write_text("not parquet")
    (tmp_path / "notes.txt").write_text("hello\n")
    open_store(f"sqlite:///{tmp_path}/.batchor/batchor.db").close()  # read-only commands need it


RUN = ["run", "--emulate"]
ERRORS: dict[str, tuple[list[str], int, str]] = {
    "unknown command": (["frobnicate"], 2, "No such command 'frobnicate'"),
    "unknown option": (["status", "x", "--colour"], 2, "No such option '--colour'"),
    "missing argument": (["wait"], 2, "Missing argument 'RUN_ID'"),
    "no input": ([*RUN, *JOB], 2, "Missing argument 'INPUT...'"),
    "bad option value": (["list", "--limit", "0"], 2, "Invalid value for '--limit'"),
    "negative timeout": (["wait", "x", "--timeout", "-1"], 2, "Invalid value for '--timeout'"),
    "unknown run (status)": (["status", "nope"], 2, "no run 'nope' in the store"),
    "unknown run (wait)": (["wait", "nope"], 2, "no run 'nope' in the store"),
    "unknown run (results)": (
        ["results", "nope", "--output", "o.jsonl"],
        2,
        "no run 'nope' in the store",
    ),
    "second input missing": ([*RUN, "a.csv", "gone.jsonl", *JOB], 2, "input file not found"),
    "second input lacks the prompt field": (
        [*RUN, "a.csv", "b.jsonl", *JOB],
        2,
        "--prompt-field names 'text', which b.jsonl does not have (fields: id, body)",
    ),
    "an input given twice": ([*RUN, "a.csv", "./a.csv", *JOB], 2, "input ./a.csv is given twice"),
    "an id in two inputs": ([*RUN, "a.csv", "same.jsonl", *JOB], 2, "duplicate item_id 'a0'"),
    "not parquet": ([*RUN, "broken.parquet", *JOB], 2, "broken.parquet is not a readable Parquet"),
    "unknown format": (
        [*RUN, "a.csv", "notes.txt", *JOB],
        2,
        "cannot tell the format of notes.txt",
    ),
    "start --emulate": (
        ["start", "a.csv", *JOB, "--emulate"],
        2,
        "--emulate cannot be used with start",
    ),
    "bad store url": (["list", "--store", "nosuch://x"], 2, "store URL"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_with_their_exit_code(
    tmp_path: Path, invoke: Invoke, case: str
) -> None:
    _inputs(tmp_path)
    args, code, message = ERRORS[case]
    assert message in one_error_line(invoke(*args), code)


def test_wait_without_an_api_key_is_one_line_exit_1(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path / "in.csv", ["r0"])
    assert invoke("start", "in.csv", *JOB, "--run-id", "k").exit_code == 0
    monkeypatch.delenv("OPENAI_API_KEY")
    assert "OPENAI_API_KEY" in one_error_line(invoke("wait", "k"), 1)


def test_emulator_on_a_busy_port_is_one_line_exit_1(invoke: Invoke) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("emulator", "--port", str(port))
    assert f"cannot serve the emulator on 127.0.0.1:{port}" in one_error_line(result, 1)
