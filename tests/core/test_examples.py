"""The runnable examples keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_python_quickstart_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "run quickstart: completed, 3 completed" in proc.stdout
    assert proc.stdout.count(" completed label=") == 3
