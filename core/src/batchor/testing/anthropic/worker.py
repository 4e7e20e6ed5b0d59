"""The background worker that answers each Message Batch's requests and ends the batch.

One thread runs timed steps from a heap, so a batch waiting out ``phase_seconds`` never
blocks another. A batch is ``in_progress`` from its creation: its requests are answered in
slices of `_SLICE` (spread over ``phase_seconds``, or all at once), their result lines
appended to the batch's results file; then it ends (no sooner than ``phase_seconds`` after
it started). A canceled batch stops answering, stays ``canceling`` for ``phase_seconds``,
then ends with every unanswered request ``canceled``; an expiring one answers only part of
its requests and ends with the rest ``expired``; a held one answers only part of its
requests and stays ``in_progress`` until it is canceled. As the API documents,
``request_counts`` move from ``processing`` to their result types only when the batch ends.

Request lines are read through their shapes (`shapes.ShapeReader`) and answered from
per-shape templates (`plans.ShapePlan`); a line no shape or template covers, or every line
while a knob needs each request's parsed ``params`` or result line (``line_fault``,
``line_rewrite``), is parsed and answered by `replies.Replier`, to the same result.
"""

from __future__ import annotations

import heapq
import itertools
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
from batchor.testing.anthropic.plans import ShapePlan
from batchor.testing.anthropic.replies import Replier, errored
from batchor.testing.anthropic.shapes import RequestShape, ShapeReader
from batchor.testing.anthropic.wire import encode, loads
from batchor.testing.emulator.stats import EmulatorStats

_log = logging.getLogger(__name__)
_SLICE = 2_000  # requests answered per step before other batches get a turn
_TICK = 0.02  # seconds between steps while the answers are spread over the phase
_BUFFER = 1 << 20


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
    shapes: ShapeReader = field(default_factory=ShapeReader)
    """The shapes of the batch's request lines seen so far."""
    plans: dict[RequestShape, ShapePlan] = field(default_factory=dict)
    """How the requests of each shape are answered."""

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
        elif record.hold:
            cap = min(total, max(0, math.floor(total * self._faults().hold_fraction)))
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
        elif not record.hold:  # a held batch stays in progress until a cancel ends it
            self._schedule(job, "end", job.started + self._phase)

    def _answer(self, job: _Job, count: int) -> None:
        assert job.reader is not None
        assert job.out is not None
        faults = self._faults()
        sampler = faults.sampler()
        pick = sampler.pick
        rewrite = faults.line_rewrite
        # Read through shapes unless a knob wants every request's params or result parsed.
        fast = rewrite is None and not sampler.wants_params
        read, plans, counts = job.shapes.line, job.plans, job.counts
        lines: list[str] = []
        answered: list[str] = []
        for raw in itertools.islice(job.reader, count):
            request = read(raw) if fast else None
            if request is not None:
                custom_id = request.custom_id
                fault = pick(custom_id, None)
                plan = plans.get(request.shape)
                if plan is None:
                    plan = plans[request.shape] = ShapePlan(self._replier, request.shape)
                if plan.usable:
                    rendered = plan.render(
                        request.custom_id_json, request.prompt, fault, "cache_control" in raw
                    )
                    if rendered is not None:
                        line, kind = rendered
                        counts[kind] += 1
                        answered.append(custom_id)
                        lines.append(line)
                        continue
                parsed = loads(raw)
            else:
                parsed = loads(raw)
                custom_id = parsed["custom_id"]
                fault = pick(custom_id, parsed["params"])
                if fast:
                    job.shapes.learn(raw, parsed)
            result = self._replier.answer(parsed["params"], fault, cached="cache_control" in raw)
            counts[result["type"]] += 1
            answered.append(custom_id)
            answer: dict[str, Any] = {"custom_id": custom_id, "result": result}
            if rewrite is None:
                lines.append(encode(answer))
                continue
            new = rewrite(answer)
            if new is not None:
                lines.append(new if isinstance(new, str) else encode(new))
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
        tail = ',"result":' + encode(result) + "}\n"
        shapes = job.shapes
        lines: list[str] = []
        for raw in job.reader:
            request = shapes.line(raw)
            if request is not None:
                literal = request.custom_id_json
            else:
                parsed = loads(raw)
                shapes.learn(raw, parsed)
                literal = encode(parsed["custom_id"])
            lines.append('{"custom_id":' + literal + tail)
            if len(lines) >= _SLICE:
                self._write_lines(job, kind, lines)
        self._write_lines(job, kind, lines)

    @staticmethod
    def _write_lines(job: _Job, kind: str, lines: list[str]) -> None:
        """Write out ``lines``, results of type ``kind``, and clear the list."""
        assert job.out is not None
        job.out.write("".join(lines))
        job.counts[kind] += len(lines)
        job.done += len(lines)
        lines.clear()

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
