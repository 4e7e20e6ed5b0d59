"""The example runs as the docs say, as a script in a fresh process, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import EXAMPLE, ROOT

# The example script in a fresh process against the session's Prefect server: the slow tier.
pytestmark = pytest.mark.slow


def test_the_example_script_runs_as_documented(tmp_path: Path, prefect_server: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BATCHOR_"))}
    env["PREFECT_API_URL"] = prefect_server  # the session's server, instead of starting one
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--run-key", "reviews-demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "using batchor's emulator" in done.stdout
    assert "run reviews-demo: completed, {'completed': 20, 'failed': 0, 'cancelled': 0}" in (
        done.stdout
    )
    results = tmp_path / ".batchor" / "example" / "prefect" / "reviews.jsonl"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 20
    assert {r["status"] for r in lines} == {"completed"}
    assert (tmp_path / ".batchor" / "batchor.db").is_file()
    assert ROOT.joinpath("examples", "prefect", "reviews.jsonl").is_file()
