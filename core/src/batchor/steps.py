"""The idempotent steps every orchestrator integration wraps: start, poll, collect.

Each can be called again, from any process, after a retry or a crash, and returns the same
answer without submitting or writing anything twice. What they hand back is small and
JSON-serialisable, so it can travel through XCom, Dagster metadata or Prefect results.

    handle = steps.start(runner, job, steps.run_id_from("my_dag", "2026-11-23"))
    while not steps.poll(runner, handle.run_id).is_terminal:
        ...  # sleep, defer, or reschedule
    result = steps.collect(runner, handle.run_id, "results/2026-11-23.jsonl")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchor.artifacts.fsspec import url_is_file
from batchor.artifacts.open import is_url, local_path
from batchor.errors import ConfigurationError, RunStateError
from batchor.results import RunSummary

if TYPE_CHECKING:
    from batchor.jobs import BatchJob
    from batchor.runner import BatchRunner

_CLEAN = re.compile(r"^[A-Za-z0-9_:@+=-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@+=-]+")
_MAX_ID = 200
_HASH = 16


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A started run, as an orchestrator keeps it between steps.

    Attributes:
        run_id: The run's id.
        fingerprint: The job definition's fingerprint; the same job gives the same value.
    """

    run_id: str
    fingerprint: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunHandle:
        """The handle `to_dict` described."""
        return cls(run_id=str(data["run_id"]), fingerprint=str(data["fingerprint"]))


@dataclass(frozen=True, slots=True)
class CollectResult:
    """A terminal run's results, written to their destination.

    Attributes:
        run_id: The run's id.
        uri: Where the results file is.
        results: Results written (one per item).
        counts: Items by final status (``completed``, ``failed``, ``cancelled``).
        input_tokens: Tokens billed for prompts.
        output_tokens: Tokens billed for replies.
        cost_usd: Estimated cost (``None`` when the price table does not know the model).
        run_status: The run's final status.
    """

    run_id: str
    uri: str
    results: int
    counts: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    run_status: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectResult:
        """The result `to_dict` described."""
        return cls(**data)


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


def start(runner: BatchRunner, job: BatchJob, run_key: str) -> RunHandle:
    """Create the run ``run_key`` (see `run_id_from`) for ``job``, or attach to it;
    ingest and submit what is ready. Calling it again never submits twice.

    Raises:
        JobMismatchError: The run exists with a different job.
    """
    run = runner.start(job, run_id=run_key)
    return RunHandle(run_id=run.run_id, fingerprint=run.fingerprint)


def poll(runner: BatchRunner, run_id: str) -> RunSummary:
    """One reconcile step of the run (poll, collect, resubmit); its summary after it. Check
    ``is_terminal`` to know when to collect."""
    return runner.get_run(run_id).refresh()


def collect(runner: BatchRunner, run_id: str, destination: str | os.PathLike[str]) -> CollectResult:
    """Write a terminal run's results to ``destination`` (``.jsonl``, ``.csv`` or
    ``.parquet``; a local path or an object-store URL such as ``s3://bucket/out.parquet``)
    and describe them. Called again with the same destination while the file
    is there, it returns the same result and writes nothing.

    Raises:
        RunStateError: The run is not terminal yet.
    """
    run = runner.get_run(run_id)
    summary = run.summary()
    if not summary.is_terminal:
        raise RunStateError(
            f"run {run_id!r} is {summary.status.value}: collect it once poll() says it is terminal"
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
