"""``status``, ``list`` and ``results``: read the store alone (no API key), tables or one
JSON document, and output free of control characters when not on a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, parsed, write_csv


def _run(invoke: Invoke, run_id: str) -> None:
    ran = invoke("run", "in.csv", *JOB, "--run-id", run_id, "--emulate", "--poll-interval", "0.05")
    assert ran.exit_code == 0, ran.stderr


def test_list_shows_the_runs_newest_first(tmp_path: Path, invoke: Invoke) -> None:
    assert invoke("db", "upgrade").exit_code == 0  # list reads a store, never creates one
    empty = invoke("list")
    assert empty.exit_code == 0, empty.stderr
    assert "no runs in the store" in empty.stdout
    assert parsed(invoke("list", "--json")) == []

    write_csv(tmp_path / "in.csv", ["r0", "r1", "r2"])
    _run(invoke, "first")
    _run(invoke, "second")

    runs = parsed(invoke("list", "--json"))
    assert [r["run_id"] for r in runs] == ["second", "first"]
    for run in runs:
        assert run["status"] == "completed"
        assert (run["items_done"], run["items_total"]) == (3, 3)
        assert run["model"] == "gpt-4.1-mini"
        assert run["created_at"].endswith("+00:00")
    table = invoke("list")
    assert table.exit_code == 0
    for text in ("first", "second", "completed", "3/3"):
        assert text in table.stdout
    assert [r["run_id"] for r in parsed(invoke("list", "--limit", "1", "--json"))] == ["second"]


def test_read_only_commands_need_no_api_key(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path / "in.csv", ["r0", "r1"])
    _run(invoke, "ro")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    status = invoke("status", "ro", "--json")
    assert status.exit_code == 0, status.stderr
    assert parsed(status)["items"]["completed"] == 2
    listed = invoke("list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert parsed(listed)[0]["run_id"] == "ro"
    results = invoke("results", "ro", "--output", "out.jsonl")
    assert results.exit_code == 0, results.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_output_has_no_control_characters_when_not_a_terminal(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", ["r0", "r1"])
    exe = Path(sys.executable).with_name("batchor")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}

    def batchor(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(exe), *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert proc.returncode == 0, proc.stderr
        for stream in (proc.stdout, proc.stderr):
            assert not any(ord(c) < 32 and c != "\n" for c in stream), repr(stream)
        return proc

    ran = batchor("run", "in.csv", *JOB, "--run-id", "tty", "--emulate", "--poll-interval", "0.05")
    assert "tty" in ran.stdout
    assert "completed" in ran.stdout
    listed = batchor("list").stdout
    assert "tty" in listed
    assert "2/2" in listed


def test_results_go_to_an_object_store_url(tmp_path: Path, invoke: Invoke, s3_bucket: str) -> None:
    import fsspec

    write_csv(tmp_path / "in.csv", ["r0", "r1", "r2"])
    _run(invoke, "to-s3")
    uri = f"{s3_bucket}/exports/results.csv"
    written = invoke("results", "to-s3", "--output", uri, "--json")
    assert written.exit_code == 0, written.stderr
    assert parsed(written)["results_file"] == uri
    with fsspec.open(uri, "rt", skip_instance_cache=True) as fh:
        rows = fh.read().splitlines()
    assert rows[0].startswith("item_id,status,")
    assert sorted(r.split(",", 1)[0] for r in rows[1:]) == ["r0", "r1", "r2"]
