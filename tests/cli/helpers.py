"""Helpers for the CLI tests: inputs, and checks of what a command printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import Result

JOB = ["--id-field", "id", "--prompt-field", "text", "--model", "gpt-4.1-mini"]


def write_csv(path: Path, ids: list[str], lang: str = "en") -> Path:
    path.write_text("id,text,lang\n" + "".join(f"{i},text of {i},{lang}\n" for i in ids))
    return path


def parsed(result: Result) -> Any:
    """stdout as one JSON document (fails if anything else is on stdout)."""
    return json.loads(result.stdout)


def one_error_line(result: Result, code: int) -> str:
    """Assert the command failed with ``code`` and exactly one ``error:`` line on stderr."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr
