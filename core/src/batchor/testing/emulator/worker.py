"""The background worker that moves batches through their lifecycle and answers their lines.

One thread runs timed steps from a heap, so a batch waiting out ``phase_seconds`` never
blocks another. Files are streamed, never loaded whole.

With ``phase_seconds=0`` (and no forced outcome) a batch's lines are answered in the same
pass that validates them, one step for the whole file, into files that are thrown away if a
line turns out invalid or the batch is cancelled while validating; the answers are released,
all at once, when the batch goes ``in_progress``, and it completes in that same step, as the
provider finishes a batch whatever the batches created after it are doing (a re-queued step
would wait behind their validation). Otherwise the ``in_progress`` phase answers
the lines in slices of `_SLICE`, spread over the phase, so other batches get turns between.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from batchor.testing.emulator.answering import Answerer, Tally
from batchor.testing.emulator.batches import BatchRecord, BatchStore, canonical_endpoint
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.files import FileStore
from batchor.testing.emulator.job import Job, open_output
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.lines import RequestLine, iter_requests
from batchor.testing.emulator.replies import ReplyFactory
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.emulator.validation import InputValidator, batch_error, open_input

_log = logging.getLogger(__name__)
_SLICE = 2_000  # lines answered per step before other batches get a turn
_TICK = 0.02  # seconds between progress steps while a phase is spread over time
_CANCEL_STEPS = frozenset({"cancel", "cancelled"})
_WRITE_BUFFER = 1 << 20


class BatchWorker:
    """Runs every batch's lifecycle on one background thread."""

    def __init__(
        self,
        *,
        store: BatchStore,
        files: FileStore,
        stats: EmulatorStats,
        faults: Callable[[], EmulatorFaults],
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
        self._replies = ReplyFactory()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._jobs: dict[str, Job] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="batch-emulator-worker", daemon=True)

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

    def submit(self, record: BatchRecord) -> None:
        """Start the lifecycle of a freshly created batch."""
        job = Job(record=record, phase_start=time.monotonic())
        with self._cond:
            self._jobs[record.id] = job
            self._push(job, "validate", job.phase_start)

    def cancel(self, batch_id: str) -> None:
        """Wind a batch (already marked ``cancelling``) down as soon as possible."""
        with self._cond:
            job = self._jobs.get(batch_id)
            if job is None or job.cancel_requested:
                return
            job.cancel_requested = True
            self._push(job, "cancel", time.monotonic())

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, job: Job, step: str, due: float) -> None:
        job.next_step = step
        heapq.heappush(self._heap, (due, next(self._seq), job.record.id, step))
        self._cond.notify()

    def _schedule(self, job: Job, step: str, due: float) -> None:
        with self._cond:
            if job.cancel_requested and step not in _CANCEL_STEPS:
                return  # the pending cancel step takes over
            self._push(job, step, due)

    def _next(self) -> tuple[Job, str] | None:
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
                _log.exception("batch emulator step %s failed for %s", step, job.record.id)
                self._abort(job)

    def _abort(self, job: Job) -> None:
        """End a batch whose step raised: ``failed``, or ``cancelled`` if it was cancelling."""
        job.close()
        self._discard_outputs(job)
        now = int(time.time())
        error = batch_error("server_error", "The emulator failed internally.")
        if not self._store.update(job.record, status="failed", failed_at=now, errors=[error]):
            self._store.update(job.record, status="cancelled", cancelled_at=now)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        job.close()
        with self._cond:
            self._jobs.pop(job.record.id, None)

    # -- lifecycle steps --------------------------------------------------------------------

    def _step_validate(self, job: Job) -> None:
        record = job.record
        stored = self._files.get(record.input_file_id)
        if stored is None:
            job.fail_errors = [batch_error("file_not_found", "The input file was deleted.")]
        else:
            validator = InputValidator(stored.path, record.endpoint, self._limits)
            if self._phase == 0 and record.outcome is None:
                self._prepare(job, validator.requests())
            else:
                for _ in validator.requests():
                    pass
            check = validator.check
            self._store.update(record, model=check.model)
            if check.errors:
                job.fail_errors = check.errors
            elif record.outcome == "token_limit":
                job.fail_errors = [
                    batch_error(
                        "token_limit_exceeded",
                        f"Enqueued token limit reached for {check.model} in organization "
                        "org-emulator. Limit: 90,000 enqueued tokens. Please try again once "
                        "some in_progress batches have been completed.",
                    )
                ]
            elif record.outcome == "fail":
                job.fail_errors = [batch_error(c, m) for c, m in self._faults().fail_batch_errors]
            else:
                job.valid = True
                self._store.update(record, total=check.total)
        if not job.valid:
            self._discard_outputs(job)
        due = job.phase_start + self._phase
        self._schedule(job, "start" if job.valid else "fail", due)

    def _step_fail(self, job: Job) -> None:
        now = int(time.time())
        if self._store.update(job.record, status="failed", failed_at=now, errors=job.fail_errors):
            self._finish(job)

    def _open(self, job: Job) -> None:
        stored = self._files.get(job.record.input_file_id)
        if stored is None:
            raise FileNotFoundError(job.record.input_file_id)
        job.handle = open_input(stored.path)
        job.requests = iter_requests(job.handle, canonical_endpoint(job.record.endpoint))
        self._open_outputs(job)

    def _open_outputs(self, job: Job) -> None:
        job.out_path = self._files.scratch_path(f"{job.record.id}-out")
        job.err_path = self._files.scratch_path(f"{job.record.id}-err")
        job.out = open_output(job.out_path)
        job.err = open_output(job.err_path)
        endpoint = canonical_endpoint(job.record.endpoint)
        job.answerer = Answerer(self._replies, endpoint, job.out, job.err)

    def _prepare(self, job: Job, requests: Iterator[RequestLine]) -> None:
        """Answer the lines of ``requests`` as they are validated, to release them later."""
        self._open_outputs(job)
        assert job.answerer is not None
        job.prepared = Tally()
        while True:
            part = job.answerer.answer(itertools.islice(requests, _SLICE), self._faults())
            if not part.answered:
                return
            job.prepared.add(part)

    def _discard_outputs(self, job: Job) -> None:
        """Throw away whatever was written to the output files (and any prepared answers)."""
        for stream, path in ((job.out, job.out_path), (job.err, job.err_path)):
            if stream is not None:
                stream.close()
            if path is not None:
                path.unlink(missing_ok=True)
        job.out = job.err = job.answerer = job.prepared = None
        job.out_path = job.err_path = None
        job.out_lines = job.err_lines = 0

    def _step_start(self, job: Job) -> None:
        if job.prepared is None:
            self._open(job)
        if not self._store.update(
            job.record, status="in_progress", in_progress_at=int(time.time())
        ):
            return
        job.phase_start = time.monotonic()
        if job.prepared is not None:
            self._record(job, job.prepared)
            job.prepared = None
            self._step_finalize(job)  # at once, not behind batches created after this one
            return
        job.cap = self._answer_cap(job.record)
        self._step_progress(job)

    def _answer_cap(self, record: BatchRecord) -> int:
        """How many of its lines a batch answers: half of an expiring batch's, the
        `EmulatorFaults.hold_fraction` of a held one's, else all."""
        total = record.total
        if record.outcome == "expire":
            return total // 2
        if record.outcome == "hold":
            fraction = min(max(self._faults().hold_fraction, 0.0), 1.0)
            return math.floor(total * fraction)
        return total

    def _step_progress(self, job: Job) -> None:
        record = job.record
        total = record.total
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
        elif record.outcome == "expire":
            self._write_unexecuted(
                job,
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )
            self._schedule(job, "expire", job.phase_start + self._phase)
        elif record.outcome == "hold":
            return  # stays in_progress until a cancel winds it down (see `_step_cancel`)
        else:
            self._schedule(job, "finalize", job.phase_start + self._phase)

    def _answer(self, job: Job, count: int) -> None:
        assert job.requests is not None
        assert job.answerer is not None
        tally = job.answerer.answer(itertools.islice(job.requests, count), self._faults())
        self._record(job, tally)

    def _record(self, job: Job, tally: Tally) -> None:
        """Count answered lines: in the batch's counts and in the emulator's stats."""
        job.done += len(tally.answered)
        job.out_lines += tally.completed
        job.err_lines += tally.failed
        self._stats.record_answers(tally.answered)
        self._store.add_counts(
            job.record,
            completed=tally.completed,
            failed=tally.failed,
            input_tokens=tally.input_tokens,
            output_tokens=tally.output_tokens,
        )

    def _write_unexecuted(self, job: Job, code: str, message: str) -> None:
        if job.requests is not None and job.answerer is not None:
            job.err_lines += job.answerer.unexecuted(job.requests, code, message)

    def _step_finalize(self, job: Job) -> None:
        if not self._store.update(job.record, status="finalizing", finalizing_at=int(time.time())):
            return
        self._close_outputs(job)
        job.phase_start = time.monotonic()
        if self._phase == 0:
            self._step_complete(job)
            return
        self._schedule(job, "complete", job.phase_start + self._phase)

    def _step_complete(self, job: Job) -> None:
        self._register(job)
        if self._store.update(job.record, status="completed", completed_at=int(time.time())):
            self._finish(job)

    def _step_expire(self, job: Job) -> None:
        self._register(job)
        if self._store.update(job.record, status="expired", expired_at=int(time.time())):
            self._finish(job)

    def _step_cancel(self, job: Job) -> None:
        if job.prepared is not None:  # cancelled before going in_progress: nothing answered
            self._discard_outputs(job)
        if job.valid and job.out is None and not job.registered:
            self._open(job)
        self._write_unexecuted(
            job, "batch_cancelled", "This request was not executed because the batch was cancelled."
        )
        delay = self._faults().cancelling_seconds
        self._push_locked(
            job, "cancelled", time.monotonic() + (self._phase if delay is None else delay)
        )

    def _push_locked(self, job: Job, step: str, due: float) -> None:
        with self._cond:
            self._push(job, step, due)

    def _step_cancelled(self, job: Job) -> None:
        self._register(job)
        self._store.update(job.record, status="cancelled", cancelled_at=int(time.time()))
        self._finish(job)

    # -- output files -----------------------------------------------------------------------

    def _close_outputs(self, job: Job) -> None:
        for stream in (job.out, job.err):
            if stream is not None and not stream.closed:
                stream.close()
        if job.handle is not None:
            job.handle.close()
        job.handle = None
        job.requests = None

    def _register(self, job: Job) -> None:
        if job.registered:
            return
        self._close_outputs(job)
        job.registered = True
        record = job.record
        available_at = time.monotonic() + max(0.0, self._faults().output_file_delay)
        ids: dict[str, str | None] = {"output_file_id": None, "error_file_id": None}
        for path, lines, key, kind in (
            (job.out_path, job.out_lines, "output_file_id", "output"),
            (job.err_path, job.err_lines, "error_file_id", "error"),
        ):
            if path is None:
                continue
            if lines:
                stored = self._files.add(
                    path,
                    f"batch_{record.id}_{kind}.jsonl",
                    "batch_output",
                    available_at=available_at,
                )
                ids[key] = stored.id
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        job.out = job.err = None
        self._store.update(record, **ids)
