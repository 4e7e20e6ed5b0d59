"""The ``batchor`` CLI: real runs in child processes, one-line errors with documented exit
codes, read-only commands from a fresh process without an API key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchor.cli.main import cli
from batchor.stores.open import open_store
from batchor.testing import OpenAIBatchEmulator

MODEL_FILE = """
from typing import Literal
from pydantic import BaseModel

class Rating(BaseModel):
    label: Literal["good", "bad"]
    reason: str | None
"""


def batchor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console script in a child process."""
    exe = Path(sys.executable).with_name("batchor")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, **(env or {})),
    )


def write_csv(path: Path, n: int) -> Path:
    path.write_text("id,text,lang\n" + "".join(f"r{i},text number {i},en\n" for i in range(n)))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_status_and_results_end_to_end(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", 25)
    (tmp_path / "rating.py").write_text(MODEL_FILE)
    proc = batchor(
        "run",
        "in.csv",
        "--id-field",
        "id",
        "--prompt-template",
        "Rate this: {text}",
        "--model",
        "gpt-4.1-mini",
        "--schema",
        "rating:Rating",
        "--metadata-field",
        "lang",
        "--run-id",
        "cli-run",
        "--output",
        "out.jsonl",
        "--emulate",
        "--poll-interval",
        "0.2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "out.jsonl" in proc.stdout
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["item_id"] for r in rows] == [f"r{i}" for i in range(25)]
    for row in rows:
        assert {"item_id", "status", "output", "error", "attempts", "usage", "metadata"} <= set(row)
        assert row["status"] == "completed"
        assert row["output"]["label"] in ("good", "bad")
        assert row["metadata"] == {"lang": "en"}
        assert row["usage"]["input_tokens"] > 0

    # Read-only commands work from a fresh process with no API key at all.
    status = batchor("status", "cli-run", "--json")
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["status"] == "completed"
    assert summary["items"]["completed"] == 25
    again = batchor("results", "cli-run", "--output", "again.jsonl")
    assert again.returncode == 0, again.stderr
    assert read_jsonl(tmp_path / "again.jsonl") == rows


def test_run_with_failures_exits_3_against_a_server_named_by_env(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"key": i, "q": f"question {i}"}) + "\n" for i in range(6))
    )

    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        return "bad_request" if body["input"] == "question 4" else None

    with OpenAIBatchEmulator() as emu:
        emu.faults.line_fault = fault
        proc = batchor(
            "run",
            "in.jsonl",
            "--id-field",
            "key",
            "--prompt-field",
            "q",
            "--model",
            "m",
            "--output",
            "out.jsonl",
            "--poll-interval",
            "0.2",
            env={"OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": emu.api_key},
        )
    assert proc.returncode == 3, proc.stderr
    rows = {r["item_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert rows["4"]["status"] == "failed"
    assert rows["4"]["error"]["class"] == "invalid_request"
    assert rows["4"]["output"] is None
    assert rows["3"]["output"] == "Echo: question 3" or "question 3" in rows["3"]["output"]


def test_a_refused_api_key_exits_1_with_one_line(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", 2)
    with OpenAIBatchEmulator(api_key="sk-right") as emu:
        proc = batchor(
            "run",
            "in.csv",
            "--id-field",
            "id",
            "--prompt-field",
            "text",
            "--model",
            "m",
            env={"OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": "sk-wrong-0000"},
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ")
    assert "sk-wrong-0000" not in proc.stderr


def test_demo_runs_every_row_to_completion(tmp_path: Path) -> None:
    proc = batchor("demo")
    assert proc.returncode == 0, proc.stderr
    results = sorted((tmp_path / ".batchor/results").glob("demo-*.jsonl"))
    assert len(results) == 1
    rows = read_jsonl(results[0])
    assert len(rows) == 1000
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["output"]["sentiment"] for r in rows} <= {"positive", "negative", "neutral"}
    assert str(results[0].relative_to(tmp_path)) in proc.stdout.replace("\n", "")


# ---- bad input: one line on stderr, exit 2, nothing sent ----------------------------------


def _bad(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", 3)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    (tmp_path / "in.txt").write_text("hello\n")
    (tmp_path / "ragged.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 2, "body": "b"}\n')
    open_store(f"sqlite:///{tmp_path}/store.db").close()


BASE = ["run", "--model", "m", "--emulate"]
BAD_INPUT = {
    "missing file": (
        [*BASE, "nope.csv", "--id-field", "id", "--prompt-field", "text"],
        "input file not found: nope.csv",
    ),
    "unknown id column": (
        [*BASE, "in.csv", "--id-field", "uid", "--prompt-field", "text"],
        "id column 'uid' not found in in.csv (fields: id, text, lang)",
    ),
    "unknown id field (jsonl)": (
        [*BASE, "in.jsonl", "--id-field", "uid", "--prompt-field", "text"],
        "id field 'uid' not found in in.jsonl (fields: id, text)",
    ),
    "duplicate ids": (
        [*BASE, "in.jsonl", "--id-field", "id", "--prompt-field", "text"],
        "duplicate item_id '1': items 1 and 2 of the source",
    ),
    "template names a missing column": (
        [*BASE, "in.csv", "--id-field", "id", "--prompt-template", "Say {body}"],
        "prompt template names 'body', which in.csv does not have (fields: id, text, lang)",
    ),
    "a later row lacks the template field": (
        [*BASE, "ragged.jsonl", "--id-field", "id", "--prompt-template", "Say {text}"],
        "build_prompt failed for item '2': KeyError: 'text'",
    ),
    "prompt field missing": (
        [*BASE, "in.csv", "--id-field", "id", "--prompt-field", "body"],
        "--prompt-field names 'body', which in.csv does not have",
    ),
    "schema does not import": (
        [
            *BASE,
            "in.csv",
            "--id-field",
            "id",
            "--prompt-field",
            "text",
            "--schema",
            "missing_mod:Model",
        ],
        "schema path 'missing_mod:Model': cannot import 'missing_mod'",
    ),
    "schema is not module:Class": (
        [*BASE, "in.csv", "--id-field", "id", "--prompt-field", "text", "--schema", "Model"],
        "schema path 'Model' must look like 'package.module:name'",
    ),
    "no prompt option": (
        [*BASE, "in.csv", "--id-field", "id"],
        "give exactly one of --prompt-template and --prompt-field",
    ),
    "unknown format": (
        [*BASE, "in.txt", "--id-field", "id", "--prompt-field", "text"],
        "cannot tell the format of in.txt",
    ),
    "bad run id": (
        [*BASE, "in.csv", "--id-field", "id", "--prompt-field", "text", "--run-id", "a/b"],
        "run_id 'a/b' is not valid",
    ),
    "unknown run": (
        ["status", "no-such-run", "--store", "sqlite:///store.db"],  # made by _bad
        "no run 'no-such-run' in the store",
    ),
    "no store": (["status", "r"], "no store at sqlite:///.batchor/batchor.db"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    _bad(tmp_path)
    args, message = BAD_INPUT[case]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_emulator_command_serves_the_api_until_interrupted(tmp_path: Path) -> None:
    import signal
    import socket

    from openai import OpenAI

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("batchor")
    server = subprocess.Popen(
        [str(exe), "emulator", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"OPENAI_BASE_URL=http://127.0.0.1:{port}/v1" in line
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-any", max_retries=0)
        assert client.batches.list().data == []
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0
