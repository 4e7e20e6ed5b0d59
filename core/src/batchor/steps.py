"""The idempotent steps every orchestrator integration wraps: start, poll, collect.

Each can be called again, from any process, after a retry or a crash, and returns the same
answer without submitting or writing anything twice. What they hand back is small and
JSON-serialisable, so it can travel through XCom, Dagster metadata or Prefect results.

    handle = steps.start(runner, job, steps.run_id_from("my_dag", "2026-11-23")).handle
    while not steps.poll(runner, handle.run_id).is_terminal:
        ...  # sleep, defer, or reschedule; or steps.wait(runner, handle.run_id, on_progress=log)
    result = steps.collect(runner, handle.run_id, "results/2026-11-23.jsonl")

This module is the one layer the Airflow, Dagster and Prefect integrations share: the job
specs they accept (`build_job`, `load_object`) and the time and money limits they set on them
(`with_limits`), the run ids they derive (`run_id_from`), the wait loop with its progress
reports (`wait`), what a run's limits did to it (`limit_stop`), and the rule that decides
what a retry can fix (`batchor.errors.is_permanent`). It sits above `Run` and `BatchRunner`,
which never import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from batchor.artifacts.fsspec import url_is_file
from batchor.artifacts.open import is_url, local_path
from batchor.errors import ConfigurationError, RunNotReady, RunStateError
from batchor.handles import CollectResult, RunHandle, StartedRun
from batchor.jobs import BatchJob
from batchor.jobspec import DeadlineSpec, JobSpec, build_job, describe_job, load_object, with_limits
from batchor.pricing import usd
from batchor.progress import DEFAULT_PROGRESS_EVERY, Progress
from batchor.results import RunSummary
from batchor.runner import BatchRunner
from batchor.states import PauseCode

__all__ = [
    "CollectResult",
    "DeadlineSpec",
    "JobSpec",
    "LimitStop",
    "Progress",
    "RunHandle",
    "StartedRun",
    "build_job",
    "collect",
    "describe_job",
    "limit_stop",
    "load_object",
    "poll",
    "results_location",
    "run_id_from",
    "start",
    "wait",
    "with_limits",
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
            Stopped at its spending cap, the message is the `LimitStop` reason, with the
            command that raises the cap.
    """
    run = runner.get_run(run_id)
    try:
        return run.wait(
            timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            on_progress=None if on_progress is None else lambda s: on_progress(Progress.of(s)),
            progress_every=progress_every,
        )
    except RunStateError as exc:
        stop = limit_stop(run.summary())
        if stop is None:
            raise
        raise RunStateError(stop.reason) from exc


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
        RunStateError: The run is paused with nothing in flight; waiting cannot end it
            (stopped at its spending cap, the message is the `LimitStop` reason).

    A run whose deadline failed items is collected like any other (the failed items'
    results are in the file); `limit_stop` of its summary says so.
    """
    run = runner.get_run(run_id)
    summary = run.summary()
    if not summary.is_terminal:
        summary = run.refresh()
    if summary.is_stalled:
        stop = limit_stop(summary)
        raise RunStateError(
            f"{stop.reason}; then collect"
            if stop is not None
            else f"run {run_id!r} is paused ({summary.pause_reason}) with nothing in flight; "
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


@dataclass(frozen=True, slots=True)
class LimitStop:
    """What a run's time or money limit did to it, for an orchestrator to report natively
    (see `limit_stop`).

    Attributes:
        kind: ``"budget"``: the run is paused at its spending cap (`PauseCode.BUDGET`) with
            nothing in flight, so no wait can end it: raise the cap and resume it
            (``batchor resume RUN --max-cost-usd N``, ``Run.resume(max_cost_usd=N)``).
            ``"deadline"``: the run ended, and its deadline failed some of its items (error
            class ``deadline``); its results can be collected as usual.
        run_id: The run.
        reason: One line saying what happened, with the numbers (and, for ``budget``, how
            to go on); for a task's failure message.
        pause_code: The run's pause code (``"budget"``), ``None`` for a deadline.
        cost_usd: The run's billed cost so far (``None`` if the model is not priced).
        max_cost_usd: The run's spending cap, if it has one.
        deadline_at: The run's deadline (epoch seconds), if it has one.
        deadline_failed: Items its deadline failed.
        items: The run's items.
    """

    kind: Literal["budget", "deadline"]
    run_id: str
    reason: str
    pause_code: str | None
    cost_usd: float | None
    max_cost_usd: float | None
    deadline_at: float | None
    deadline_failed: int
    items: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def limit_stop(summary: RunSummary) -> LimitStop | None:
    """How the run's limits stopped it, or ``None`` when they did not (or not yet): the run
    is paused at its spending cap with nothing in flight (``budget``: waiting cannot end it),
    or it has ended and its deadline failed some items (``deadline``). A run paused at its
    cap while batches are still in flight is not stopped yet: those batches are collected
    first. The rule every integration applies to fail its task natively."""
    common: dict[str, Any] = {
        "run_id": summary.run_id,
        "cost_usd": summary.cost_usd,
        "max_cost_usd": summary.max_cost_usd,
        "deadline_at": summary.deadline_at,
        "deadline_failed": summary.deadline_failed,
        "items": summary.total,
    }
    run = summary.run_id
    if summary.is_stalled and summary.pause_code == PauseCode.BUDGET:
        why = summary.pause_reason or "its next batch would cost more than the cap allows"
        reason = (
            f"run {run!r} stopped at its spending cap of {_usd(summary.max_cost_usd)} "
            f"({_usd(summary.cost_usd)} billed so far): {why}"
        )
        if "batchor resume" not in why:
            reason += f"; raise the cap to go on: `batchor resume {run} --max-cost-usd AMOUNT`"
        return LimitStop(kind="budget", reason=reason, pause_code=PauseCode.BUDGET.value, **common)
    if summary.is_terminal and summary.deadline_failed:
        when = (
            "its deadline"
            if summary.deadline_at is None
            else "its deadline "
            + datetime.fromtimestamp(summary.deadline_at, UTC).isoformat(timespec="seconds")
        )
        reason = (
            f"run {run!r} passed {when}: {summary.deadline_failed} of {summary.total} items "
            "failed with error class 'deadline'"
        )
        return LimitStop(kind="deadline", reason=reason, pause_code=None, **common)
    return None


def _usd(amount: float | None) -> str:
    return "an unknown amount" if amount is None else usd(amount)


def results_location(destination: str | os.PathLike[str]) -> str:
    """Where `collect` writes and records ``destination``: an object-store URL as given, a
    local path (or ``file://`` URL) as an absolute path. Integrations key caches on it."""
    if is_url(destination):
        return os.fspath(destination)
    return str(local_path(destination).resolve())


def _exists(uri: str) -> bool:
    return url_is_file(uri) if is_url(uri) else Path(uri).is_file()
