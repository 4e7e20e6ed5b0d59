"""The ``batchor`` command: run file-based jobs, inspect runs, export results, the emulator
and the demo."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from batchor.cli.filejobs import open_source, prompt_builder
from batchor.cli.output import console, fail, run_progress, summary_table, write_results
from batchor.errors import (
    BatchorError,
    ConfigurationError,
    JobMismatchError,
    RunNotFoundError,
    SourceError,
)
from batchor.jobs import BatchJob, RetryPolicy
from batchor.providers.openai_config import ENDPOINTS, Endpoint, OpenAIProviderConfig
from batchor.runner import BatchRunner
from batchor.states import RunStatus
from batchor.structured import import_model

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILURES = 0, 1, 2, 3
_USAGE_ERRORS = (ConfigurationError, SourceError, JobMismatchError, RunNotFoundError)


def exit_code(status: RunStatus) -> int:
    """0 when every item completed, 3 when the run completed with failures, 1 otherwise."""
    if status is RunStatus.COMPLETED:
        return EXIT_OK
    if status is RunStatus.COMPLETED_WITH_FAILURES:
        return EXIT_FAILURES
    return EXIT_ERROR


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """batchor's own errors become one line on stderr and an exit code, never a traceback."""
    try:
        yield
    except _USAGE_ERRORS as exc:
        fail(str(exc), EXIT_USAGE)
    except BatchorError as exc:
        fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        fail("interrupted; the run is durable: run the same command again to resume", 130)


def _store_options(func: F) -> F:
    func = click.option(
        "--artifacts",
        envvar="BATCHOR_ARTIFACTS",
        help="Artifact directory [env BATCHOR_ARTIFACTS; default .batchor/artifacts].",
    )(func)
    func = click.option(
        "--store",
        envvar="BATCHOR_STORE",
        help="Store URL [env BATCHOR_STORE; default sqlite:///.batchor/batchor.db].",
    )(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
@click.version_option(package_name="batchor")
def cli(verbose: bool) -> None:
    """batchor: durable runs of large workloads through the OpenAI Batch API."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--id-field", required=True, help="Field (column) holding each item's id.")
@click.option("--prompt-template", help='Prompt with {field} placeholders, e.g. "Rate: {text}".')
@click.option("--prompt-field", help="Field whose value is the whole prompt.")
@click.option("--model", required=True, help="Model name, e.g. gpt-4.1-mini.")
@click.option("--system", help="System prompt (instructions).")
@click.option("--schema", help="Pydantic model for structured output, as module:Class.")
@click.option(
    "--endpoint", type=click.Choice(ENDPOINTS), default="/v1/responses", show_default=True
)
@click.option(
    "--metadata-field",
    "metadata_fields",
    multiple=True,
    help="Field copied into each result's metadata (repeatable).",
)
@click.option("--max-attempts", type=click.IntRange(1), default=3, show_default=True)
@click.option("--run-id", help="Stable run id: the same id resumes the same run.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file (JSONL) [default .batchor/results/RUN_ID.jsonl].",
)
@click.option("--emulate", is_flag=True, help="Run against a built-in emulator of the API.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="Longest pause between status checks, in seconds.",
)
@_store_options
def run(
    input_path: str,
    id_field: str,
    prompt_template: str | None,
    prompt_field: str | None,
    model: str,
    system: str | None,
    schema: str | None,
    endpoint: str,
    metadata_fields: tuple[str, ...],
    max_attempts: int,
    run_id: str | None,
    output: Path | None,
    emulate: bool,
    poll_interval: float,
    store: str | None,
    artifacts: str | None,
) -> None:
    """Run INPUT (CSV or JSONL) through the Batch API to the end and write the results.

    Exit codes: 0 every item completed, 3 completed with failures, 2 bad input, 1 otherwise.
    """
    with _errors():
        source = open_source(input_path, id_field, metadata_fields)
        build = prompt_builder(source, template=prompt_template, field=prompt_field, system=system)
        structured = import_model(schema) if schema else None
        with _provider(emulate) as (base_url, api_key):
            job = BatchJob(
                items=source,
                build_prompt=build,
                provider_config=OpenAIProviderConfig(
                    model=model,
                    endpoint=cast(Endpoint, endpoint),
                    base_url=base_url,
                    api_key=api_key,
                ),
                structured_output=structured,
                retry_policy=RetryPolicy(max_attempts=max_attempts),
            )
            with BatchRunner(store, artifacts) as runner:
                code = _run_to_end(runner, job, run_id, output, poll_interval)
    raise SystemExit(code)


def _run_to_end(
    runner: BatchRunner,
    job: BatchJob,
    run_id: str | None,
    output: Path | None,
    poll_interval: float,
) -> int:
    started = time.monotonic()
    with run_progress(console.is_terminal) as progress:
        handle = runner.start(job, run_id, on_ingest=progress.ingested)
        summary = handle.wait(max_poll_interval=poll_interval, on_progress=progress.update)
    path = output or Path(".batchor/results") / f"{handle.run_id}.jsonl"
    count = write_results(handle, path)
    console.print(summary_table(summary))
    console.print(
        f"{count} results in [bold]{path}[/bold] "
        f"({time.monotonic() - started:.1f} s); run id [bold]{handle.run_id}[/bold]"
    )
    return exit_code(summary.status)


@contextlib.contextmanager
def _provider(emulate: bool) -> Iterator[tuple[str | None, str | None]]:
    """``(base_url, api_key)``: an emulator's while the block runs, or (None, None) to let the
    SDK read OPENAI_BASE_URL / OPENAI_API_KEY."""
    if not emulate:
        yield None, None
        return
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator() as emulator:
        yield emulator.base_url, emulator.api_key


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_store_options
def status(run_id: str, as_json: bool, store: str | None, artifacts: str | None) -> None:
    """Show a run's status and counts (reads the store only; no API key needed)."""
    with _errors(), BatchRunner(store, artifacts) as runner:
        summary = runner.get_run(run_id).summary()
        if as_json:
            click.echo(_json(summary.to_dict()))
        else:
            console.print(summary_table(summary))


@cli.command()
@click.argument("run_id")
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the results (JSONL).",
)
@_store_options
def results(run_id: str, output: Path, store: str | None, artifacts: str | None) -> None:
    """Write a run's results (one JSON object per item) to --output."""
    with _errors(), BatchRunner(store, artifacts) as runner:
        count = write_results(runner.get_run(run_id), output)
        click.echo(f"{count} results written to {output}", err=True)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--phase-seconds",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Least time a batch spends in each provider phase.",
)
def emulator(host: str, port: int, phase_seconds: float) -> None:
    """Serve the OpenAI Batch API emulator until interrupted (Ctrl-C)."""
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator(host=host, port=port, phase_seconds=phase_seconds) as emu:
        click.echo(f"OPENAI_BASE_URL={emu.base_url} OPENAI_API_KEY={emu.api_key}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


@cli.command()
@_store_options
def demo(store: str | None, artifacts: str | None) -> None:
    """Run the bundled demo (1,000 product reviews, structured output) against the emulator
    on the embedded defaults, and print where the results are."""
    from batchor.demo import demo_job

    with _errors(), _provider(True) as (base_url, api_key):
        job = demo_job(base_url=base_url, api_key=api_key)
        with BatchRunner(store, artifacts) as runner:
            code = _run_to_end(runner, job, time.strftime("demo-%Y%m%d-%H%M%S"), None, 0.5)
    raise SystemExit(code)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)


def main() -> None:
    """The console-script entry point."""
    cli(prog_name="batchor")
