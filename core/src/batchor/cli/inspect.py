"""Read-only commands: ``status``, ``list`` and ``results``. They read the store alone and
need no API key."""

from __future__ import annotations

import time

import click

from batchor.cli.exits import errors
from batchor.cli.options import json_option, store_options
from batchor.cli.output import (
    console,
    echo_json,
    provider_fields,
    run_row,
    runs_table,
    show_summary,
)
from batchor.runner import DEFAULT_STORE, BatchRunner
from batchor.stores.open import open_store


def _reader(store: str | None, artifacts: str | None) -> BatchRunner:
    """A runner on the existing store: a missing or empty one is an error, never created."""
    return BatchRunner(open_store(store or DEFAULT_STORE, create=False), artifacts)


@click.command()
@click.argument("run_id")
@json_option
@store_options
def status(run_id: str, as_json: bool, store: str | None, artifacts: str | None) -> None:
    """Show a run's status, where its requests go (provider, endpoint, model or Azure
    deployment; Anthropic's max tokens) and its counts."""
    with errors(), _reader(store, artifacts) as runner:
        summary = runner.get_run(run_id).summary()
        record = runner.store.get_run(run_id)
        where = provider_fields(record.config) if record is not None else None
        show_summary(summary, as_json, provider=where)


@click.command("list")
@click.option("--limit", type=click.IntRange(1), help="Show only the newest N runs.")
@json_option
@store_options
def list_runs(limit: int | None, as_json: bool, store: str | None, artifacts: str | None) -> None:
    """List the runs in the store, newest first."""
    with errors(), _reader(store, artifacts) as runner:
        records = runner.store.list_runs(limit)
        rows = [run_row(record, runner.store.item_counts(record.pk)) for record in records]
    if as_json:
        echo_json(rows)
    elif rows:
        console.print(runs_table(rows))
    else:
        console.print("no runs in the store")


@click.command()
@click.argument("run_id")
@click.option(
    "--output",
    required=True,
    help="Where to write the results, a path or an object-store URL (s3://...): .jsonl, "
    ".csv or .parquet (by extension).",
)
@json_option
@store_options
def results(
    run_id: str, output: str, as_json: bool, store: str | None, artifacts: str | None
) -> None:
    """Write a run's terminal results to --output: JSONL (one object per item), or CSV or
    Parquet (one column per field), streamed."""
    with errors(), _reader(store, artifacts) as runner:
        run = runner.get_run(run_id)
        started = time.perf_counter()
        count = run.export_results(output)
        seconds = time.perf_counter() - started
    if as_json:
        echo_json(
            {
                "run_id": run_id,
                "results_file": str(output),
                "results_written": count,
                "seconds": round(seconds, 3),
            }
        )
    else:
        rate = f", {count / seconds:,.0f} results/s" if seconds > 0 and count else ""
        click.echo(f"{count} results written to {output} in {seconds:.2f} s{rate}", err=True)
