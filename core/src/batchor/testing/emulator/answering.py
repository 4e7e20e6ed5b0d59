"""Answering a batch's request lines into its output and error files, a slice at a time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.lines import LineShape, RequestLine, parse_line
from batchor.testing.emulator.replies import Renderer, ReplyFactory, extract_prompt

_FLUSH_CHARS = 1 << 20  # answered text held in memory before it is written out
_UNEXECUTED_CHUNK = 2_000  # error lines of unexecuted requests written at a time


@dataclass
class Tally:
    """What answered lines add to a batch's counts."""

    answered: list[str] = field(default_factory=list)
    """The custom_id of every answered line (success or error)."""
    completed: int = 0
    """Lines written to the output file."""
    failed: int = 0
    """Lines written to the error file."""
    input_tokens: int = 0
    """Estimated prompt tokens of the answered lines."""
    output_tokens: int = 0
    """Estimated completion tokens of the answered lines."""

    def add(self, other: Tally) -> None:
        """Add ``other``'s lines and counts to this tally."""
        self.answered += other.answered
        self.completed += other.completed
        self.failed += other.failed
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens


class Answerer:
    """Answers the request lines of one batch, appending to its output and error files.

    Lines of one `LineShape` share a `Renderer`, built on the first of them.
    """

    def __init__(self, replies: ReplyFactory, endpoint: str, out: TextIO, err: TextIO) -> None:
        """Answer lines of a batch on ``endpoint`` into the open files ``out`` and ``err``."""
        self._replies = replies
        self._endpoint = endpoint
        self._out = out
        self._err = err
        self._renderers: dict[LineShape, Renderer] = {}

    def answer(self, requests: Iterable[RequestLine], faults: EmulatorFaults) -> Tally:
        """Answer every line of ``requests`` (one slice) under the current ``faults``."""
        sampler = faults.line_fault_sampler()
        idle, wants_body, pick = sampler.idle, sampler.wants_body, sampler.pick
        route = self._route
        shape: LineShape | None = None
        renderer: Renderer | None = None
        now = int(time.time())
        flush_early = not faults.shuffle_output
        outputs: list[str] = []
        errors: list[str] = []
        tally = Tally()
        answered = tally.answered
        input_tokens = output_tokens = pending = 0
        for request in requests:
            prompt = request.prompt
            if prompt is None or request.shape is not shape or renderer is None:
                shape = request.shape
                renderer, prompt = route(request)
            fault = None
            if not idle:
                body = request.body
                if body is None and wants_body:
                    body = parse_line(request.raw)["body"]
                fault = pick(request.custom_id, body)
            line, is_error, used_in, used_out = renderer.answer(
                request.custom_id_json, prompt, fault, now
            )
            (errors if is_error else outputs).append(line)
            input_tokens += used_in
            output_tokens += used_out
            answered.append(request.custom_id)
            pending += len(line)
            if pending > _FLUSH_CHARS and flush_early:
                self._flush(outputs, errors, tally, faults)
                pending = 0
        self._flush(outputs, errors, tally, faults)
        if idle:
            sampler.skip(len(answered))
        tally.input_tokens = input_tokens
        tally.output_tokens = output_tokens
        return tally

    def unexecuted(self, requests: Iterable[RequestLine], code: str, message: str) -> int:
        """Write an error line for each request never executed; return how many."""
        unexecuted = self._replies.unexecuted
        lines: list[str] = []
        count = 0
        for request in requests:
            lines.append(unexecuted(request.custom_id_json, code, message))
            if len(lines) >= _UNEXECUTED_CHUNK:
                count += self._write(self._err, lines)
        return count + self._write(self._err, lines)

    def _route(self, request: RequestLine) -> tuple[Renderer, str]:
        """The renderer answering ``request`` (one per line shape) and its prompt."""
        shape = request.shape
        if shape is None:
            assert request.body is not None
            body = request.body
            renderer = self._replies.renderer(self._endpoint, body)
        else:
            body = shape.body
            renderer = self._renderers.get(shape) or self._replies.renderer(self._endpoint, body)
            self._renderers[shape] = renderer
        if request.prompt is not None:
            return renderer, request.prompt
        return renderer, extract_prompt(self._endpoint, body)

    def _flush(
        self, outputs: list[str], errors: list[str], tally: Tally, faults: EmulatorFaults
    ) -> None:
        faults.rewrite_lines(outputs, errors)
        tally.completed += len(outputs)
        tally.failed += len(errors)
        faults.shuffle(outputs)
        faults.shuffle(errors)
        self._write(self._out, outputs)
        self._write(self._err, errors)

    @staticmethod
    def _write(stream: TextIO, lines: list[str]) -> int:
        """Write ``lines`` out and clear the list; return how many there were."""
        count = len(lines)
        if count:
            stream.write("\n".join(lines) + "\n")
            lines.clear()
        return count
