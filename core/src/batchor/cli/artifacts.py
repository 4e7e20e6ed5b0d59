"""Retention commands: ``export-artifacts`` (copy a run's files with a manifest) and
``prune-artifacts`` (reclaim their space). They need no API key."""

from __future__ import annotations

import click

from batchor.cli.exits import errors
from batchor.cli.options import json_option, store_options
from batchor.cli.output import console, echo_json
from batchor.errors import RunStateError
from batchor.runner import BatchRunner


@click.command("export-artifacts")
@click.argument("run_id")
@click.argument("dest")
@click.option(
    "--force",
    is_flag=True,
    help="Export into a non-empty DEST; a file there is still only replaced if batchor "
    "wrote it (identical, or listed by an earlier export of the same run).",
)
@json_option
@store_options
def export_artifacts(
    run_id: str, dest: str, force: bool, as_json: bool, store: str | None, artifacts: str | None
) -> None:
    """Copy a run's request files, batch inputs and raw outputs to DEST (a directory or an
    object-store URL such as s3://bucket/audit), with a manifest.json of every file's size
    and SHA-256, for audit.

    DEST must be new or empty: a file, or a non-empty DEST without --force, is refused
    (exit 2) and nothing is written.
    """
    with errors(RunStateError), BatchRunner(store, artifacts) as runner:
        export = runner.get_run(run_id).export_artifacts(dest, force=force)
    if as_json:
        echo_json(
            {
                "run_id": run_id,
                "manifest": export.manifest,
                "files": export.files,
                "bytes": export.bytes,
            }
        )
    else:
        console.print(
            f"{export.files} files ({export.bytes:,} bytes) copied; manifest {export.manifest}",
            soft_wrap=True,
        )


@click.command("prune-artifacts")
@click.argument("run_id")
@click.option(
    "--include-raw-outputs",
    is_flag=True,
    help="Also delete the raw output and error files (refused unless exported, see --force).",
)
@click.option("--force", is_flag=True, help="Delete raw outputs even if never exported.")
@json_option
@store_options
def prune_artifacts(
    run_id: str,
    include_raw_outputs: bool,
    force: bool,
    as_json: bool,
    store: str | None,
    artifacts: str | None,
) -> None:
    """Delete a terminal run's files to reclaim space; its results stay readable."""
    with errors(RunStateError), BatchRunner(store, artifacts) as runner:
        report = runner.get_run(run_id).prune_artifacts(
            include_raw_outputs=include_raw_outputs, force=force
        )
    if as_json:
        echo_json({"run_id": run_id, "files": report.files, "bytes": report.bytes})
    else:
        console.print(f"{report.files} files deleted, {report.bytes:,} bytes reclaimed")
