"""``run``, ``start`` and ``wait``: submitting and following runs, several inputs (CSV,
JSONL, Parquet) as one run, exit codes and ``--json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed, write_csv


def test_start_returns_once_submitted_and_wait_finishes_the_run(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", [f"r{i}" for i in range(5)])
    started = invoke("start", "in.csv", *JOB, "--run-id", "s1", "--json")
    assert started.exit_code == 0, started.stderr
    summary = parsed(started)
    assert summary["run_id"] == "s1"
    assert summary["status"] == "running"
    assert summary["items"]["submitted"] == 5
    assert summary["batches"] == {"submitted": 1}
    assert emulator.stats.batches_created == 1

    # Starting the same run again attaches to it and sends nothing twice.
    again = invoke("start", "in.csv", *JOB, "--run-id", "s1")
    assert again.exit_code == 0, again.stderr
    assert "s1" in again.stdout
    assert emulator.stats.batches_created == 1

    waited = invoke("wait", "s1", "--poll-interval", "0.05", "--json")
    assert waited.exit_code == 0, waited.stderr
    final = parsed(waited)
    assert final["status"] == "completed"
    assert final["items"]["completed"] == 5

    table = invoke("wait", "s1")  # a finished run: nothing to do, same exit code
    assert table.exit_code == 0
    assert "completed" in table.stdout


def test_wait_exits_3_when_items_failed(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        return "bad_request" if body["input"] == "text of r1" else None

    emulator.faults.line_fault = fault
    write_csv(tmp_path / "in.csv", ["r0", "r1", "r2"])
    assert invoke("start", "in.csv", *JOB, "--run-id", "f1").exit_code == 0
    waited = invoke("wait", "f1", "--poll-interval", "0.05", "--json")
    assert waited.exit_code == 3, waited.stderr
    assert parsed(waited)["items"]["failed"] == 1


def test_wait_timeout_prints_one_line_and_exits_1(
    tmp_path: Path, invoke: Invoke, slow_emulator: OpenAIBatchEmulator
) -> None:
    write_csv(tmp_path / "in.csv", ["r0", "r1"])
    assert invoke("start", "in.csv", *JOB, "--run-id", "t1").exit_code == 0
    waited = invoke("wait", "t1", "--timeout", "0.1", "--poll-interval", "0.05", "--json")
    message = one_error_line(waited, 1)
    assert "run 't1' is still running after 0.1 s" in message
    assert parsed(waited)["status"] == "running"  # the summary when it gave up, as JSON


def test_several_inputs_incl_parquet_make_one_run_in_order(tmp_path: Path, invoke: Invoke) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_csv(tmp_path / "a.csv", ["a0", "a1"], lang="en")
    (tmp_path / "b.jsonl").write_text(
        "".join(
            json.dumps({"id": f"b{i}", "text": f"jsonl {i}", "lang": "de"}) + "\n" for i in (0, 1)
        )
    )
    pq.write_table(
        pa.table({"id": ["c0", "c1"], "text": ["parquet 0", "parquet 1"], "lang": ["fr", "fr"]}),
        tmp_path / "c.parquet",
    )
    args = ["a.csv", "b.jsonl", "c.parquet", *JOB, "--metadata-field", "lang"]
    ran = invoke(
        "run",
        *args,
        "--run-id",
        "multi",
        "--output",
        "out.jsonl",
        "--emulate",
        "--poll-interval",
        "0.05",
        "--json",
    )
    assert ran.exit_code == 0, ran.stderr
    summary = parsed(ran)
    assert summary["items"]["completed"] == 6
    assert summary["results_written"] == 6
    assert summary["results_file"] == "out.jsonl"

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == ["a0", "a1", "b0", "b1", "c0", "c1"]
    assert [r["metadata"]["lang"] for r in rows] == ["en", "en", "de", "de", "fr", "fr"]
    assert "parquet 1" in rows[-1]["output"]

    runs = parsed(invoke("list", "--json"))
    assert [(r["run_id"], r["items_total"]) for r in runs] == [("multi", 6)]

    # The inputs in another order are another input: the run refuses to resume from them.
    reordered = invoke(
        "run",
        "c.parquet",
        "a.csv",
        "b.jsonl",
        *JOB[:6],
        "--metadata-field",
        "lang",
        "--run-id",
        "multi",
        "--emulate",
    )
    assert "was started from a different input" in one_error_line(reordered, 2)


def test_run_and_start_print_nothing_but_json_on_stdout(tmp_path: Path, invoke: Invoke) -> None:
    write_csv(tmp_path / "in.csv", ["r0"])
    ran = invoke("run", "in.csv", *JOB, "--emulate", "--poll-interval", "0.05", "--json")
    assert ran.exit_code == 0, ran.stderr
    summary = parsed(ran)
    assert summary["status"] == "completed"
    assert Path(summary["results_file"]).is_file()
