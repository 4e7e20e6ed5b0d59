"""What the CLI prints: one-line errors, progress bars, summary and run tables, JSON
documents, result files. Tables, notes and JSON go to stdout; progress bars and errors to
stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchor.cli.limits import time_left
from batchor.pricing import usd
from batchor.results import RunSummary
from batchor.states import ItemStatus
from batchor.stores.base import RunRecord

if TYPE_CHECKING:
    pass

err_console = Console(stderr=True)
console = Console()


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    text = " ".join(str(message).split())
    print(f"error: {text}", file=sys.stderr)
    raise SystemExit(code)


class RunProgress:
    """Up to two bars: items accepted from the input, items with a final outcome."""

    #: Seconds between two counts of the run's items for the bars (a count scans them all).
    EVERY = 1.0

    def __init__(self, progress: Progress, *, ingest: bool, results: bool) -> None:
        self._progress = progress
        self.shown = not progress.disable
        """Whether the bars are shown (stderr is a terminal): else nothing needs counting."""
        self._ingest = progress.add_task("ingest", total=None) if ingest else None
        self._done = progress.add_task("results", total=None) if results else None

    @property
    def reporter(self) -> Callable[[RunSummary], None] | None:
        """What `Run.wait` reports progress to: `update` while the bars are shown."""
        return self.update if self.shown else None

    def ingested(self, count: int) -> None:
        if self._ingest is not None:
            self._progress.update(self._ingest, completed=count)

    def update(self, summary: RunSummary) -> None:
        if self._ingest is not None and summary.ingest_complete:
            self._progress.update(self._ingest, completed=summary.total, total=summary.total)
        if self._done is None:
            return
        live = sum(n for s, n in summary.batches.items() if s != "collected")
        self._progress.update(
            self._done,
            completed=summary.terminal_items,
            total=summary.total if summary.ingest_complete else None,
            description=f"results ({live} batch{'es' if live != 1 else ''} live)",
        )


@contextmanager
def run_progress(*, ingest: bool = True, results: bool = True) -> Iterator[RunProgress]:
    """A live progress display on stderr; silent when stderr is not a terminal, so piped
    and redirected output carries no control characters."""
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=False,
    )
    with progress:
        yield RunProgress(progress, ingest=ingest, results=results)


def echo_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def show_summary(
    summary: RunSummary,
    as_json: bool,
    *,
    note: str | None = None,
    extra: Mapping[str, Any] | None = None,
    provider: Mapping[str, Any] | None = None,
) -> None:
    """A run's summary: a table and an optional note, or (``as_json``) one JSON document
    with ``extra`` keys added; with ``provider`` (see `provider_fields`), where the run's
    requests go too."""
    if as_json:
        left = {}
        if summary.deadline_at is not None:  # how long until it, as of now
            left["time_left_seconds"] = round(max(summary.deadline_at - time.time(), 0.0), 3)
        echo_json({**summary.to_dict(), **left, **(provider or {}), **(extra or {})})
        return
    console.print(summary_table(summary, provider))
    if note:
        console.print(note, soft_wrap=True)


def provider_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """Where a run's requests go, from its stored config: its provider, endpoint and model,
    for Anthropic each reply's ``max_tokens``, and for Azure OpenAI its deployment, API
    version and endpoint (``base_url``)."""
    name = config.get("provider") or "openai"
    fields = {"provider": name, "endpoint": config.get("endpoint"), "model": config.get("model")}
    if name == "anthropic":
        fields["max_tokens"] = config.get("max_tokens")
    if name == "azure":
        fields["deployment"] = config.get("deployment") or config.get("model")
        fields["api_version"] = config.get("api_version")
        fields["base_url"] = config.get("base_url")
    return fields


_PROVIDER_ROWS = {
    "provider": "provider",
    "endpoint": "endpoint",
    "model": "model",
    "max_tokens": "max tokens",
    "deployment": "deployment",
    "api_version": "api version",
    "base_url": "azure endpoint",
}


def summary_table(summary: RunSummary, provider: Mapping[str, Any] | None = None) -> Table:
    """A table of a run's status, where its requests go (given ``provider``), item counts,
    batches and tokens."""
    table = Table(title=f"run {summary.run_id}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("status", summary.status.value)
    if summary.pause_code:
        table.add_row("pause code", summary.pause_code)
    if summary.pause_reason:
        table.add_row("paused because", summary.pause_reason)
    shown = dict(provider or {})
    if shown.get("deployment") and shown.get("model") == shown["deployment"]:
        del shown["model"]  # Azure OpenAI priced by the deployment's name: one row
    for key, label in _PROVIDER_ROWS.items():
        if shown.get(key) is not None:
            table.add_row(label, str(shown[key]))
    table.add_row("items", str(summary.total) + ("" if summary.ingest_complete else " (ingesting)"))
    for status, n in summary.items.items():
        if n:
            table.add_row(f"  {status.value}", str(n))
    for batch_status, n in sorted(summary.batches.items()):
        table.add_row(f"batches {batch_status}", str(n))
    table.add_row("input tokens", f"{summary.usage.input_tokens:,}")
    table.add_row("output tokens", f"{summary.usage.output_tokens:,}")
    if summary.cost_usd is not None:
        table.add_row("estimated cost", f"${summary.cost_usd:,.4f}")
    for label, value in limit_rows(summary):
        table.add_row(label, value)
    return table


def limit_rows(summary: RunSummary, now: float | None = None) -> list[tuple[str, str]]:
    """The rows of a run's deadline (when it is, time left, what it ended), spending cap
    (the cap, what is committed against it, what is left), batch timeouts and synchronous
    finish (items answered, their cost, duplicate answers), each shown when it applies."""
    rows = []
    if summary.deadline_at is not None:
        when = datetime.fromtimestamp(summary.deadline_at).astimezone()
        left = summary.deadline_at - (time.time() if now is None else now)
        rows.append(("deadline", when.isoformat(timespec="seconds")))
        rows.append(("time left", time_left(left) if left > 0 else "none (passed)"))
    cap = summary.max_cost_usd
    if cap is not None:
        committed = summary.committed_cost_usd or 0.0
        rows.append(("spending cap", usd(cap)))
        rows.append(("committed cost", f"{usd(committed)} (billed + batches in flight)"))
        rows.append(("cap left", usd(max(cap - committed, 0.0))))
    if summary.deadline_failed:
        rows.append(("failed at the deadline", f"{summary.deadline_failed:,}"))
    if summary.timed_out_batches:
        again = f"{summary.timeout_requeued:,} items sent again"
        rows.append(("batches timed out", f"{summary.timed_out_batches} ({again})"))
    if summary.sync_answered:
        rows.append(("answered synchronously", f"{summary.sync_answered:,}"))
        if summary.sync_cost_usd is not None:
            rows.append(("synchronous cost", usd(summary.sync_cost_usd)))
    if summary.duplicate_answers:
        rows.append(("duplicate answers", f"{summary.duplicate_answers:,} (billed, not applied)"))
    return rows


def key_value_table(title: str, rows: Mapping[str, Any]) -> Table:
    """A two-column table of named figures."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in rows.items():
        table.add_row(name, "-" if value is None else str(value))
    return table


def run_row(record: RunRecord, counts: Mapping[ItemStatus, int]) -> dict[str, Any]:
    """One run as ``list`` shows it, JSON-serialisable."""
    done = sum(n for status, n in counts.items() if status.is_terminal)
    return {
        "run_id": record.run_id,
        "status": record.status.value,
        "items_done": done,
        "items_total": sum(counts.values()),
        "ingest_complete": record.ingest_complete,
        "provider": record.config.get("provider") or "openai",
        "model": record.config.get("model"),
        "created_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(timespec="seconds"),
        "pause_reason": record.pause_reason,
    }


def runs_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """A table of runs, newest first; with a provider column when a run is not OpenAI's."""
    providers = any(row.get("provider", "openai") != "openai" for row in rows)
    table = Table(title="runs")
    table.add_column("run id")
    table.add_column("status")
    table.add_column("items done/total", justify="right")
    if providers:
        table.add_column("provider")
    table.add_column("model")
    table.add_column("created")
    for row in rows:
        status = row["status"]
        if row["pause_reason"]:
            status = f"{status} ({row['pause_reason']})"
        total = f"{row['items_total']:,}" + ("" if row["ingest_complete"] else "+")
        created = datetime.fromisoformat(row["created_at"]).astimezone()
        cells = [row["run_id"], status, f"{row['items_done']:,}/{total}"]
        if providers:
            cells.append(row["provider"])
        cells += [row["model"] or "", created.strftime("%Y-%m-%d %H:%M:%S")]
        table.add_row(*cells)
    return table
