"""What the CLI prints: one-line errors, progress bars, summary tables, result files."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchor.results import RunSummary

if TYPE_CHECKING:
    from batchor.run import Run

err_console = Console(stderr=True)
console = Console()


def fail(message: str, code: int) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    text = " ".join(str(message).split())
    print(f"error: {text}", file=sys.stderr)
    raise SystemExit(code)


class RunProgress:
    """Two bars: items accepted from the input, items with a final outcome."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._ingest = progress.add_task("ingest", total=None)
        self._done = progress.add_task("results", total=None)

    def ingested(self, count: int) -> None:
        self._progress.update(self._ingest, completed=count)

    def update(self, summary: RunSummary) -> None:
        if summary.ingest_complete:
            self._progress.update(self._ingest, completed=summary.total, total=summary.total)
        live = sum(n for s, n in summary.batches.items() if s != "collected")
        self._progress.update(
            self._done,
            completed=summary.terminal_items,
            total=summary.total if summary.ingest_complete else None,
            description=f"results ({live} batch{'es' if live != 1 else ''} live)",
        )


@contextmanager
def run_progress(enabled: bool = True) -> Iterator[RunProgress]:
    """A live progress display on stderr (silent when not a terminal or disabled)."""
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield RunProgress(progress)


def summary_table(summary: RunSummary) -> Table:
    """A table of a run's status, item counts, batches and tokens."""
    table = Table(title=f"run {summary.run_id}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("status", summary.status.value)
    if summary.pause_reason:
        table.add_row("paused because", summary.pause_reason)
    table.add_row("items", str(summary.total) + ("" if summary.ingest_complete else " (ingesting)"))
    for status, n in summary.items.items():
        if n:
            table.add_row(f"  {status.value}", str(n))
    for batch_status, n in sorted(summary.batches.items()):
        table.add_row(f"batches {batch_status}", str(n))
    table.add_row("input tokens", f"{summary.usage.input_tokens:,}")
    table.add_row("output tokens", f"{summary.usage.output_tokens:,}")
    return table


def write_results(run: Run, path: Path) -> int:
    """Write the run's terminal results as JSON Lines to ``path`` (atomically); returns the
    count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for result in run.results():
            fh.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count
