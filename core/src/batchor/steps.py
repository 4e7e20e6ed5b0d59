"""The idempotent steps every orchestrator integration wraps: start, poll, collect.

Each can be called again, from any process, after a retry or a crash, and returns the same
answer without submitting or writing anything twice. What they hand back is small and
JSON-serialisable, so it can travel through XCom, Dagster metadata or Prefect results.

    handle = steps.start(runner, job, steps.run_id_from("my_dag", "2026-11-23")).handle
    while not steps.poll(runner, handle.run_id).is_terminal:
        ...  # sleep, defer, or reschedule; or steps.wait(runner, handle.run_id, on_progress=log)
    result = steps.collect(runner, handle.run_id, "results/2026-11-23.jsonl")

This module is the one layer the Airflow, Dagster and Prefect integrations share: the job
specs they accept (`build_job`, `load_object`), the run ids they derive (`run_id_from`), the
wait loop with its progress reports (`wait`), and the rule that decides what a retry can fix
(`batchor.errors.is_permanent`). It sits above `Run` and `BatchRunner`, which never import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from batchor.artifacts.fsspec import url_is_file
from batchor.artifacts.open import is_url, local_path
from batchor.errors import ConfigurationError, RunNotReady, RunStateError
from batchor.handles import CollectResult, RunHandle, StartedRun
from batchor.jobs import BatchJob
from batchor.jobspec import JobSpec, build_job, describe_job, load_object
from batchor.progress import DEFAULT_PROGRESS_EVERY, Progress, throttled
from batchor.results import RunSummary
from batchor.runner import BatchRunner

__all__ = [
    "CollectResult",
    "JobSpec",
    "Progress",
    "RunHandle",
    "StartedRun",
    "build_job",
    "collect",
    "describe_job",
    "load_object",
    "poll",
    "results_location",
    "run_id_from",
    "start",
    "wait",
]

_CLEAN = re.compile(r"^[A-Za-z0-9_:@+=-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@+=-]+")
_MAX_ID = 200
_HASH = 16


def run_id_from(*parts: object) -> str:
    """A deterministic, valid run id from an orchestrator's identity of the work (DAG and
    logical date, asset and partition, flow and parameters...).

    Parts made only of letters, digits and ``_:@+=-`` are joined with ``.`` as they are.
    Otherwise (or beyond 200 characters) unsafe characters become ``-`` and a hash of the
    exact parts is appended, so different parts never share an id.
    """
    if not parts:
        raise ConfigurationError("run_id_from needs at least one part")
    texts = [str(p) for p in parts]
    if any(not t for t in texts):
        raise ConfigurationError(f"run_id_from got an empty part: {texts!r}")
    joined = ".".join(texts)
    if all(_CLEAN.match(t) for t in texts) and len(joined) <= _MAX_ID and joined[0].isalnum():
        return joined
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:_HASH]
    readable = _UNSAFE.sub("-", joined).strip("-.") or "run"
    if not readable[0].isalnum():
        readable = "r" + readable
    return f"{readable[: _MAX_ID - _HASH - 1]}-{digest}"


def start(runner: BatchRunner, job: BatchJob, run_key: str) -> StartedRun:
    """Create the run ``run_key`` (see `run_id_from`) for ``job``, or attach to it;
    ingest and submit what is ready. Calling it again never submits twice.

    Returns the run's handle (``.handle``, small and JSON-serialisable: keep it between
    steps) and its summary right after the start (``.summary``, to log or report).

    Raises:
        JobMismatchError: The run exists with a different job.
    """
    run = runner.start(job, run_id=run_key)
    handle = RunHandle(run_id=run.run_id, fingerprint=run.fingerprint)
    return StartedRun(handle=handle, summary=run.summary())


def poll(runner: BatchRunner, run_id: str) -> RunSummary:
    """One reconcile step of the run (poll, collect, resubmit); its summary after it. Check
    ``is_terminal`` to know when to collect."""
    return runner.get_run(run_id).refresh()


def wait(
    runner: BatchRunner,
    run_id: str,
    timeout: float | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = DEFAULT_PROGRESS_EVERY,
    poll_interval: float = 0.5,
    max_poll_interval: float = 30.0,
) -> RunSummary:
    """Drive the run to its end (`batchor.Run.wait`), reporting its `Progress` to
    ``on_progress`` at the first step, then at most every ``progress_every`` seconds, and at
    the end. The one wait loop every integration uses in a blocking task.

    Raises:
        WaitTimeout: ``timeout`` seconds passed first (a `RunNotReady`: the run goes on).
        RunStateError: The run is paused with nothing in flight: only a resume continues it.
    """
    report = None if on_progress is None else throttled(on_progress, progress_every)
    return runner.get_run(run_id).wait(
        timeout,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
        on_progress=report,
    )


def collect(runner: BatchRunner, run_id: str, destination: str | os.PathLike[str]) -> CollectResult:
    """Write a terminal run's results to ``destination`` (``.jsonl``, ``.csv`` or
    ``.parquet``; a local path or an object-store URL such as ``s3://bucket/out.parquet``)
    and describe them. Called again with the same destination while the file
    is there, it returns the same result and writes nothing.

    A run that has not ended yet is first brought up to date (one reconcile step, as
    `poll`), so a collect that comes after the provider finished succeeds without a separate
    poll.

    Raises:
        RunNotReady: The run has not ended yet; collect again later (a retry can succeed).
        RunStateError: The run is paused with nothing in flight; waiting cannot end it.
    """
    run = runner.get_run(run_id)
    summary = run.summary()
    if not summary.is_terminal:
        summary = run.refresh()
    if summary.is_stalled:
        raise RunStateError(
            f"run {run_id!r} is paused ({summary.pause_reason}) with nothing in flight; "
            f"resume it (`batchor resume {run_id}`) before collecting"
        )
    if not summary.is_terminal:
        open_items = summary.total - summary.terminal_items
        raise RunNotReady(
            f"run {run_id!r} is {summary.status.value} with {open_items} items still open: "
            "collect it once it has ended"
        )
    uri = results_location(destination)
    previous = run.collected
    if previous is not None and previous.uri == uri and _exists(uri):
        return previous
    written = run.export_results(uri)
    result = CollectResult(
        run_id=run_id,
        uri=uri,
        results=written,
        counts={s.value: n for s, n in summary.items.items() if s.is_terminal},
        input_tokens=summary.usage.input_tokens,
        output_tokens=summary.usage.output_tokens,
        cost_usd=summary.cost_usd,
        run_status=summary.status.value,
    )
    run.record_collected(result)
    return result


def results_location(destination: str | os.PathLike[str]) -> str:
    """Where `collect` writes and records ``destination``: an object-store URL as given, a
    local path (or ``file://`` URL) as an absolute path. Integrations key caches on it."""
    if is_url(destination):
        return os.fspath(destination)
    return str(local_path(destination).resolve())


def _exists(uri: str) -> bool:
    return url_is_file(uri) if is_url(uri) else Path(uri).is_file()
