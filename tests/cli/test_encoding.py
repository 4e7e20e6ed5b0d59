"""``--encoding`` on run, start and estimate, and the one-line error for an input that is not
text in the encoding given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed


def _latin1(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes("id,text\nr1,ok\nr2,café\n".encode("latin-1"))
    (tmp_path / "in.jsonl").write_bytes('{"id": "j1", "text": "naïve"}\n'.encode("latin-1"))


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
def test_non_utf8_input_is_one_line_naming_file_and_line(
    tmp_path: Path, invoke: Invoke, name: str
) -> None:
    # Before: "error: UnicodeDecodeError: 'utf-8' codec can't decode ... position 14", exit 1.
    _latin1(tmp_path)
    line = 3 if name == "in.csv" else 1
    message = one_error_line(invoke("run", "--emulate", name, *JOB), 2)
    assert f"{name} line {line} (byte " in message
    assert "--encoding" in message


def test_encoding_option_reads_the_inputs(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    _latin1(tmp_path)
    result = invoke("estimate", "in.csv", "in.jsonl", *JOB, "--encoding", "latin-1", "--json")
    assert result.exit_code == 0, result.stderr
    assert parsed(result)["requests"] == 3
    result = invoke(
        "run", "in.csv", "in.jsonl", *JOB, "--encoding", "latin-1", "--output", "out.jsonl"
    )
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["item_id"] for r in lines) == ["j1", "r1", "r2"]
    assert emulator.stats.batches_created == 1


def test_unknown_encoding_and_a_directory_are_one_line(tmp_path: Path, invoke: Invoke) -> None:
    _latin1(tmp_path)
    bad = invoke("start", "in.csv", *JOB, "--encoding", "klingon")
    assert "unknown encoding 'klingon'" in one_error_line(bad, 2)
    (tmp_path / "dir.csv").mkdir()
    # Before: "input file not found: dir.csv".
    assert "dir.csv is a directory, not a file" in one_error_line(
        invoke("run", "--emulate", "dir.csv", *JOB), 2
    )
