"""The background worker that moves batches through their states and answers their lines.

One thread runs timed steps from a heap, so a batch waiting out ``phase_seconds`` never blocks
another: ``BATCH_STATE_PENDING`` (the input is checked and counted) for at least
``phase_seconds``, then ``BATCH_STATE_RUNNING`` with the lines answered in slices spread over
``phase_seconds``, then the end state. Files are streamed, never loaded whole.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.gemini import batches as states
from batchor.testing.gemini.batches import GeminiBatch, GeminiBatchStore
from batchor.testing.gemini.errors import rpc_status
from batchor.testing.gemini.faults import GeminiFaults
from batchor.testing.gemini.files import GeminiFileStore, sha256_field
from batchor.testing.gemini.lines import LineRefused, split_line
from batchor.testing.gemini.replies import Replier, answer, error_line

_log = logging.getLogger(__name__)
_SLICE = 2_000  # lines answered per step before other batches get a turn
_TICK = 0.02  # seconds between progress steps while a phase is spread over time
_CANCEL_STEPS = frozenset({"cancel", "cancelled"})
_READ_BUFFER = 1 << 20
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass
class _Job:
    batch: GeminiBatch
    replier: Replier
    phase_start: float
    next_step: str | None = "validate"
    cancel_requested: bool = False
    total: int = 0
    cap: int = 0
    """How many lines the batch answers (fewer than `total` if it expires or is held)."""
    done: int = 0
    lines: Iterator[str] | None = None
    handle: TextIO | None = None
    out: BinaryIO | None = None
    out_path: Path | None = None
    hasher: Any = field(default_factory=hashlib.sha256)
    error: dict[str, Any] | None = None

    def close(self) -> None:
        for stream in (self.handle, self.out):
            if stream is not None:
                stream.close()
        self.handle = self.out = None
        self.lines = None


def _nonblank(handle: TextIO) -> Iterator[str]:
    for raw in handle:
        if raw.strip():
            yield raw


class GeminiWorker:
    """Runs every batch's lifecycle on one background thread."""

    def __init__(
        self,
        *,
        store: GeminiBatchStore,
        files: GeminiFileStore,
        stats: EmulatorStats,
        faults: Callable[[], GeminiFaults],
        limits: EmulatorLimits,
        phase_seconds: float,
    ) -> None:
        """Wire the worker to the emulator's stores; ``faults`` returns the live faults."""
        self._store = store
        self._files = files
        self._stats = stats
        self._faults = faults
        self._limits = limits
        self._phase = max(0.0, phase_seconds)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._jobs: dict[str, _Job] = {}
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="gemini-emulator-worker", daemon=True
        )

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker thread and close every open file."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for job in self._jobs.values():
            job.close()

    def submit(self, batch: GeminiBatch) -> None:
        """Start the lifecycle of a freshly created batch."""
        job = _Job(batch=batch, replier=Replier(batch.model), phase_start=time.monotonic())
        with self._cond:
            self._jobs[batch.id] = job
            self._push(job, "validate", job.phase_start)

    def cancel(self, batch_id: str) -> None:
        """Stop answering a batch's lines and end it ``BATCH_STATE_CANCELLED`` soon."""
        with self._cond:
            job = self._jobs.get(batch_id)
            if job is None or job.cancel_requested:
                return
            job.cancel_requested = True
            self._push(job, "cancel", time.monotonic())

    def forget(self, batch_id: str) -> None:
        """Drop a deleted batch: no further step runs, its partial output is thrown away."""
        with self._cond:
            job = self._jobs.pop(batch_id, None)
        if job is not None:
            job.close()
            if job.out_path is not None:
                job.out_path.unlink(missing_ok=True)

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, job: _Job, step: str, due: float) -> None:
        job.next_step = step
        heapq.heappush(self._heap, (due, next(self._seq), job.batch.id, step))
        self._cond.notify()

    def _schedule(self, job: _Job, step: str, due: float) -> None:
        with self._cond:
            if job.cancel_requested and step not in _CANCEL_STEPS:
                return  # the pending cancel step takes over
            self._push(job, step, due)

    def _next(self) -> tuple[_Job, str] | None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, _, batch_id, step = heapq.heappop(self._heap)
                job = self._jobs.get(batch_id)
                if job is not None and job.next_step == step:
                    job.next_step = None
                    return job, step
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            job, step = item
            try:
                getattr(self, "_step_" + step)(job)
            except Exception:  # keep the worker alive whatever happens to one batch
                _log.exception("gemini emulator step %s failed for %s", step, job.batch.id)
                self._end(job, states.FAILED, rpc_status("INTERNAL", "Internal error."))

    def _end(self, job: _Job, state: str, error: dict[str, Any] | None = None) -> None:
        """Close the batch's files and give it its end ``state``."""
        job.close()
        if state == states.FAILED and job.out_path is not None:
            job.out_path.unlink(missing_ok=True)
            job.out_path = None
        output = self._register(job)
        self._store.update(job.batch, state=state, error=error, output_file=output)
        with self._cond:
            self._jobs.pop(job.batch.id, None)

    # -- lifecycle steps --------------------------------------------------------------------

    def _step_validate(self, job: _Job) -> None:
        batch = job.batch
        stored = self._files.get(batch.input_file.removeprefix("files/"))
        problem: tuple[str, str] | None = None
        if stored is None:
            problem = ("NOT_FOUND", f"The input file {batch.input_file} no longer exists.")
        elif stored.size > self._limits.max_batch_input_bytes:
            problem = (
                "INVALID_ARGUMENT",
                f"The input file is larger than {self._limits.max_batch_input_bytes} bytes.",
            )
        else:
            with stored.path.open(encoding="utf-8", errors="replace") as handle:
                job.total = sum(1 for _ in _nonblank(handle))
            if job.total == 0:
                problem = ("INVALID_ARGUMENT", "The input file contains no requests.")
            elif job.total > self._limits.max_batch_lines:
                problem = (
                    "INVALID_ARGUMENT",
                    f"The input file has {job.total} requests; a batch may hold at most "
                    f"{self._limits.max_batch_lines}.",
                )
        if problem is None and batch.outcome == "token_limit":
            problem = (
                "RESOURCE_EXHAUSTED",
                f"Enqueued token limit exceeded for {batch.model}. Please try again once some "
                "running batches have finished.",
            )
        elif problem is None and batch.outcome == "fail":
            problem = self._faults().fail_batch_status
        if problem is None:
            self._store.update(batch, request_count=job.total)
        due = job.phase_start + self._phase
        if problem is None:
            self._schedule(job, "start", due)
        else:
            job.error = rpc_status(*problem)
            self._schedule(job, "fail", due)

    def _step_fail(self, job: _Job) -> None:
        self._end(job, states.FAILED, job.error)

    def _step_start(self, job: _Job) -> None:
        stored = self._files.get(job.batch.input_file.removeprefix("files/"))
        if stored is None:
            raise FileNotFoundError(job.batch.input_file)
        job.handle = stored.path.open(encoding="utf-8", errors="replace", buffering=_READ_BUFFER)
        job.lines = _nonblank(job.handle)
        job.out_path = self._files.scratch_path(f"batch-{job.batch.id}")
        job.out = job.out_path.open("wb", buffering=_READ_BUFFER)
        if not self._store.update(job.batch, state=states.RUNNING):
            return
        job.phase_start = time.monotonic()
        job.cap = self._answer_cap(job)
        self._step_progress(job)

    def _answer_cap(self, job: _Job) -> int:
        """How many of its lines a batch answers: half of an expiring batch's, the
        `GeminiFaults.hold_fraction` of a held one's, else all."""
        if job.batch.outcome == "expire":
            return job.total // 2
        if job.batch.outcome == "hold":
            fraction = min(max(self._faults().hold_fraction, 0.0), 1.0)
            return math.floor(job.total * fraction)
        return job.total

    def _step_progress(self, job: _Job) -> None:
        total = job.total
        cap = job.cap
        if self._phase > 0:
            elapsed = time.monotonic() - job.phase_start
            target = min(cap, math.ceil(total * elapsed / self._phase))
        else:
            target = cap
        count = min(target - job.done, _SLICE)
        if count > 0:
            self._answer(job, count)
        now = time.monotonic()
        if job.done < cap:
            self._schedule(job, "progress", now if count == _SLICE else now + _TICK)
        elif job.batch.outcome == "hold":
            return  # stays BATCH_STATE_RUNNING until a cancel winds it down (`_step_cancel`)
        else:
            end = "expire" if job.batch.outcome == "expire" else "finish"
            self._schedule(job, end, job.phase_start + self._phase)

    def _answer(self, job: _Job, count: int) -> None:
        assert job.lines is not None
        assert job.out is not None
        faults = self._faults()
        sampler = faults.line_fault_sampler()
        answered: list[dict[str, Any]] = []
        for raw in itertools.islice(job.lines, count):
            try:
                key, request = split_line(raw)
            except LineRefused as exc:
                answered.append(error_line(None, "INVALID_ARGUMENT", str(exc)))
                continue
            fault = None if sampler.idle else sampler.pick(key or "", request)
            answered.append(answer(job.replier, key, request, fault))
        if sampler.idle:
            sampler.skip(len(answered))
        job.done += len(answered)
        failed = sum(1 for line in answered if "error" in line)
        self._store.add_counts(job.batch, succeeded=len(answered) - failed, failed=failed)
        self._stats.record_answers(line["key"] for line in answered if "key" in line)
        self._write(job, answered, faults)

    def _write(self, job: _Job, answered: list[dict[str, Any]], faults: GeminiFaults) -> None:
        rewrite = faults.line_rewrite
        texts: list[str] = []
        for line in answered:
            new = rewrite(line) if rewrite is not None else line
            if new is not None:
                texts.append(new if isinstance(new, str) else _encode(new))
        faults.shuffle(texts)
        if texts and job.out is not None:
            data = ("\n".join(texts) + "\n").encode("utf-8")
            job.hasher.update(data)
            job.out.write(data)

    def _step_finish(self, job: _Job) -> None:
        self._end(job, states.SUCCEEDED)

    def _step_expire(self, job: _Job) -> None:
        if not self._faults().expire_keeps_output:
            job.done = 0  # nothing to register
        error = rpc_status(
            "DEADLINE_EXCEEDED", "The batch expired before all of its requests were processed."
        )
        self._end(job, states.EXPIRED, error)

    def _step_cancel(self, job: _Job) -> None:
        self._push_locked(job, "cancelled", time.monotonic() + self._phase)

    def _step_cancelled(self, job: _Job) -> None:
        self._end(job, states.CANCELLED, rpc_status("CANCELLED", "The batch was cancelled."))

    def _push_locked(self, job: _Job, step: str, due: float) -> None:
        with self._cond:
            self._push(job, step, due)

    # -- output files -----------------------------------------------------------------------

    def _register(self, job: _Job) -> str | None:
        """Register the batch's output file (if it answered any line); return its name."""
        path = job.out_path
        job.out_path = None
        if path is None:
            return None
        if job.done == 0:
            path.unlink(missing_ok=True)
            return None
        available_at = time.monotonic() + max(0.0, self._faults().output_file_delay)
        stored = self._files.add_generated(
            path,
            f"batch-{job.batch.id}",
            "application/jsonl",
            sha256_field(job.hasher),
            available_at=available_at,
        )
        return stored.name
