"""A batch's state inside the emulator's worker (`batchor.testing.emulator.worker`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from batchor.testing.emulator.answering import Answerer, Tally
from batchor.testing.emulator.batches import BatchRecord
from batchor.testing.emulator.lines import RequestLine

_WRITE_BUFFER = 1 << 20


@dataclass
class Job:
    """One batch as the worker moves it through its lifecycle: where it is, its open input
    and output files, and what it has answered."""

    record: BatchRecord
    phase_start: float
    next_step: str | None = "validate"
    cancel_requested: bool = False
    valid: bool = False
    fail_errors: list[dict[str, Any]] = field(default_factory=list)
    handle: TextIO | None = None
    requests: Iterator[RequestLine] | None = None
    answerer: Answerer | None = None
    prepared: Tally | None = None  # answered while validating, not released yet
    out: TextIO | None = None
    err: TextIO | None = None
    out_path: Path | None = None
    err_path: Path | None = None
    out_lines: int = 0
    err_lines: int = 0
    done: int = 0
    cap: int = 0  # lines it answers: all of them, unless expiring or held
    registered: bool = False

    def close(self) -> None:
        """Close its files."""
        for stream in (self.handle, self.out, self.err):
            if stream is not None:
                stream.close()
        self.handle = self.out = self.err = None
        self.requests = None


def open_output(path: Path) -> TextIO:
    """An output file of a batch, written line by line through a large buffer."""
    return path.open("w", encoding="utf-8", newline="\n", buffering=_WRITE_BUFFER)
