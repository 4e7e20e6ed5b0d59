"""What an operator does after submitting: results in three formats, estimate, export and
prune artifacts. None of it needs an API key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed, write_csv


@pytest.fixture
def finished(tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> str:
    """A completed run of 4 items; afterwards no API key is set."""
    write_csv(tmp_path / "in.csv", [f"r{i}" for i in range(4)])
    ran = invoke("run", "in.csv", *JOB, "--run-id", "done", "--emulate", "--poll-interval", "0.05")
    assert ran.exit_code == 0, ran.stderr
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return "done"


def test_results_are_written_in_the_format_the_extension_names(
    tmp_path: Path, invoke: Invoke, finished: str
) -> None:
    for name in ("out.jsonl", "out.csv", "out.parquet"):
        written = invoke("results", finished, "--output", name, "--json")
        assert written.exit_code == 0, written.stderr
        assert parsed(written)["results_written"] == 4
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    ids = [f"r{i}" for i in range(4)]
    assert [x["item_id"] for x in lines] == [r["item_id"] for r in rows] == ids
    assert [r["item_id"] for r in table] == ids
    assert [r["output_text"] for r in rows] == [r["output_text"] for r in table]
    assert [r["row"] for r in table] == [0, 1, 2, 3]
    assert all(x["source"].endswith("in.csv") for x in lines)
    bad = invoke("results", finished, "--output", "out.xlsx")
    assert ".jsonl, .csv, .parquet" in one_error_line(bad, 2)


def test_estimate_sends_nothing_and_reports_batches_and_cost(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_csv(tmp_path / "in.csv", [f"e{i}" for i in range(30)])
    with OpenAIBatchEmulator() as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        result = invoke("estimate", "in.csv", *JOB, "--json")
        assert result.exit_code == 0, result.stderr
        assert emu.stats.total_calls == 0
    found = parsed(result)
    assert (found["requests"], found["batches"], found["too_large"]) == (30, 1, 0)
    assert found["estimated_input_tokens"] > 30
    assert found["estimated_input_cost_usd"] == pytest.approx(
        found["estimated_input_tokens"] * 0.2 / 1e6
    )
    assert not (tmp_path / ".batchor").exists()  # nothing was written

    (tmp_path / "prices.json").write_text(json.dumps({"gpt-4.1-mini": [2.0, 8.0]}))
    table = invoke("estimate", "in.csv", *JOB, "--prices", "prices.json")
    assert table.exit_code == 0, table.stderr
    assert "batches" in table.stdout
    assert "estimated input cost" in table.stdout
    (tmp_path / "bad.json").write_text('{"gpt-4.1-mini": 3}')
    bad = invoke("estimate", "in.csv", *JOB, "--prices", "bad.json")
    assert "bad.json: prices must be" in one_error_line(bad, 2)


def test_export_then_prune_artifacts(tmp_path: Path, invoke: Invoke, finished: str) -> None:
    refused = invoke("prune-artifacts", finished, "--include-raw-outputs")
    assert "never exported" in one_error_line(refused, 2)

    exported = invoke("export-artifacts", finished, "audit", "--json")
    assert exported.exit_code == 0, exported.stderr
    manifest = json.loads(Path(parsed(exported)["manifest"]).read_text())
    assert {f["kind"] for f in manifest["files"]} == {"requests", "batch_input", "raw_output"}

    pruned = invoke("prune-artifacts", finished, "--include-raw-outputs", "--json")
    assert pruned.exit_code == 0, pruned.stderr
    assert parsed(pruned)["files"] == len(manifest["files"])
    assert not any((tmp_path / ".batchor/artifacts/runs/done").rglob("*.jsonl"))
    again = invoke("results", finished, "--output", "after.jsonl")
    assert again.exit_code == 0, again.stderr
    assert len((tmp_path / "after.jsonl").read_text().splitlines()) == 4


def test_pruning_a_live_run_is_one_line_exit_2(
    tmp_path: Path, invoke: Invoke, slow_emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", ["l0", "l1"])
    started = invoke("start", "in.csv", *JOB, "--run-id", "live")
    assert started.exit_code == 0, started.stderr
    assert "terminal runs only" in one_error_line(invoke("prune-artifacts", "live"), 2)
