"""The background worker that answers each Message Batch's requests and ends the batch.

One thread runs timed steps from a heap, so a batch waiting out ``phase_seconds`` never
blocks another. A batch is ``in_progress`` from its creation: its requests are answered in
slices of `_SLICE` (spread over ``phase_seconds``, or all at once), their result lines
appended to the batch's results file; then it ends (no sooner than ``phase_seconds`` after
it started). A canceled batch stops answering, stays ``canceling`` for ``phase_seconds``,
then ends with every unanswered request ``canceled``; an expiring one answers only part of
its requests and ends with the rest ``expired``. As the API documents, ``request_counts``
move from ``processing`` to their result types only when the batch ends.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from batchor.testing.anthropic.batches import BatchRecord, BatchStore
from batchor.testing.anthropic.faults import AnthropicEmulatorFaults
from batchor.testing.anthropic.replies import Replier, errored
from batchor.testing.emulator.stats import EmulatorStats

_log = logging.getLogger(__name__)
_SLICE = 2_000  # requests answered per step before other batches get a turn
_TICK = 0.02  # seconds between steps while the answers are spread over the phase
_BUFFER = 1 << 20
_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class _Job:
    record: BatchRecord
    started: float
    seq: int = -1
    """The sequence number of the job's pending step (older heap entries are stale)."""
    reader: TextIO | None = None
    out: TextIO | None = None
    done: int = 0
    canceled: bool = False
    counts: Counter[str] = field(default_factory=Counter)

    def close(self) -> None:
        for stream in (self.reader, self.out):
            if stream is not None and not stream.closed:
                stream.close()


class AnthropicBatchWorker:
    """Runs every Message Batch's processing on one background thread."""

    def __init__(
        self,
        *,
        store: BatchStore,
        stats: EmulatorStats,
        faults: Callable[[], AnthropicEmulatorFaults],
        replier: Replier,
        phase_seconds: float,
    ) -> None:
        """Wire the worker to the emulator's store; ``faults`` returns the live faults."""
        self._store = store
        self._stats = stats
        self._faults = faults
        self._replier = replier
        self._phase = max(0.0, phase_seconds)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._jobs: dict[str, _Job] = {}
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="anthropic-emulator-worker", daemon=True
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

    def submit(self, record: BatchRecord) -> None:
        """Start processing a freshly created batch."""
        job = _Job(record=record, started=time.monotonic())
        with self._cond:
            self._jobs[record.id] = job
            self._push(job, "progress", job.started)

    def cancel(self, batch_id: str) -> None:
        """Wind down a batch (already marked ``canceling``): end it after ``phase_seconds``."""
        with self._cond:
            job = self._jobs.get(batch_id)
            if job is None or job.canceled:
                return
            job.canceled = True
            self._push(job, "end", time.monotonic() + self._phase)

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, job: _Job, step: str, due: float) -> None:
        job.seq = next(self._seq)
        heapq.heappush(self._heap, (due, job.seq, job.record.id, step))
        self._cond.notify()

    def _schedule(self, job: _Job, step: str, due: float) -> None:
        with self._cond:
            if not job.canceled:  # once canceled, the pending cancel step takes over
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
                _, seq, batch_id, step = heapq.heappop(self._heap)
                job = self._jobs.get(batch_id)
                if job is not None and job.seq == seq:
                    return job, step
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            job, step = item
            try:
                if step == "progress":
                    self._step_progress(job)
                else:
                    self._step_end(job)
            except Exception:  # keep the worker alive whatever happens to one batch
                _log.exception("Anthropic emulator failed on batch %s", job.record.id)
                self._abort(job)

    # -- steps ------------------------------------------------------------------------------

    def _open(self, job: _Job) -> None:
        if job.reader is None:
            job.reader = job.record.spool.open(encoding="utf-8", buffering=_BUFFER)
            job.out = job.record.results.open(
                "w", encoding="utf-8", newline="\n", buffering=_BUFFER
            )

    def _step_progress(self, job: _Job) -> None:
        self._open(job)
        record = job.record
        total = record.total
        cap = total
        if record.expire:
            cap = min(total, max(0, math.floor(total * self._faults().expire_fraction)))
        target = cap
        if self._phase > 0:
            elapsed = time.monotonic() - job.started
            target = min(cap, math.ceil(total * elapsed / self._phase))
        count = min(target - job.done, _SLICE)
        if count > 0:
            self._answer(job, count)
        now = time.monotonic()
        if job.done < cap:
            self._schedule(job, "progress", now if count == _SLICE else now + _TICK)
        else:
            self._schedule(job, "end", job.started + self._phase)

    def _answer(self, job: _Job, count: int) -> None:
        assert job.reader is not None
        assert job.out is not None
        faults = self._faults()
        pick = faults.sampler().pick
        rewrite = faults.line_rewrite
        answer = self._replier.answer
        lines: list[str] = []
        answered: list[str] = []
        for raw in itertools.islice(job.reader, count):
            request = json.loads(raw)
            custom_id = request["custom_id"]
            params = request["params"]
            result = answer(params, pick(custom_id, params), cached="cache_control" in raw)
            job.counts[result["type"]] += 1
            answered.append(custom_id)
            line: dict[str, Any] = {"custom_id": custom_id, "result": result}
            if rewrite is None:
                lines.append(_encode(line))
                continue
            new = rewrite(line)
            if new is not None:
                lines.append(new if isinstance(new, str) else _encode(new))
        job.done += len(answered)
        faults.shuffle(lines)
        if lines:
            job.out.write("\n".join(lines) + "\n")
        self._stats.record_answers(answered)

    def _write_rest(self, job: _Job, result: dict[str, Any]) -> None:
        """Give every request not answered yet the same ``result``."""
        self._open(job)
        assert job.reader is not None
        assert job.out is not None
        kind = str(result["type"])
        tail = _encode(result)
        for raw in job.reader:
            custom_id = json.loads(raw)["custom_id"]
            job.out.write(f'{{"custom_id":{_encode(custom_id)},"result":{tail}}}\n')
            job.counts[kind] += 1
            job.done += 1

    def _step_end(self, job: _Job) -> None:
        if job.canceled:
            self._write_rest(job, {"type": "canceled"})
        elif job.record.expire:
            self._write_rest(job, {"type": "expired"})
        self._finish(job)

    def _abort(self, job: _Job) -> None:
        """End a batch whose step raised: every request not answered yet ``errored``."""
        try:
            self._write_rest(job, errored("api_error", "Internal server error"))
        except Exception:
            _log.exception("Anthropic emulator could not finish batch %s", job.record.id)
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        job.close()
        with self._cond:
            self._jobs.pop(job.record.id, None)
        self._store.end(job.record, job.counts)
