"""The shared control plane end to end: a Postgres store and S3 artifacts (a real
S3-compatible server on loopback), driven and read from fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
)
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from ..core.conftest import Sentiment

# Fresh processes on a real Postgres server and S3 server: the slow tier.
pytestmark = pytest.mark.slow

_REPO = str(Path(__file__).resolve().parents[2])
_FRESH = """
import json, sys
from batchor import BatchRunner
store, artifacts, run_id, out = sys.argv[1:5]
with BatchRunner(store, artifacts) as runner:
    run = runner.get_run(run_id)
    summary = run.wait(poll_interval=0.05)
    run.export_results(out)
    typed = [type(r.output).__name__ for r in run.results() if r.output is not None]
print(json.dumps({"status": summary.status.value, "typed": sorted(set(typed))}))
"""


def test_a_run_on_postgres_and_s3_is_finished_and_read_by_fresh_processes(
    pg_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"p{k}", "text": f"review {k}"}) + "\n" for k in range(300))
    )
    artifacts = f"{s3_bucket}/batchor"
    faults = EmulatorFaults(seed=5, line_server_error_rate=0.1)
    with OpenAIBatchEmulator(phase_seconds=0.2, faults=faults) as emu:
        job = BatchJob(
            items=JsonlItemSource(source, id_field="id"),
            build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
            structured_output=Sentiment,
            limits=BatchLimits(max_requests=100),
        )
        with BatchRunner(pg_url, artifacts) as runner:
            runner.start(job, "pg-s3")  # ingests and submits, then this process stops
        env = {
            **os.environ,
            "OPENAI_API_KEY": emu.api_key,
            "OPENAI_BASE_URL": emu.base_url,
            "PYTHONPATH": _REPO,  # the output model is importable, as the user's code is
        }
        finished = subprocess.run(
            [sys.executable, "-c", _FRESH, pg_url, artifacts, "pg-s3", str(tmp_path / "a.jsonl")],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    assert json.loads(finished.stdout) == {"status": "completed", "typed": ["Sentiment"]}
    assert emu.stats.batches_created >= 3

    # Read again from yet another process, with no API key at all.
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = _REPO
    subprocess.run(
        [sys.executable, "-c", _FRESH, pg_url, artifacts, "pg-s3", str(tmp_path / "b.jsonl")],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    first = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert first == again
    assert sorted(r["item_id"] for r in first) == sorted(f"p{k}" for k in range(300))
    assert all(r["status"] == "completed" for r in first)

    # The request and output files are in the bucket, and the store holds the run.
    with BatchRunner(pg_url, artifacts) as runner:
        export = runner.get_run("pg-s3").export_artifacts(tmp_path / "audit")
    kinds = {f["kind"] for f in json.loads(Path(export.manifest).read_text())["files"]}
    assert kinds >= {"requests", "batch_input", "raw_output"}
