"""A result file read as it downloads: each whole line judged as it arrives, applied with
the others of its chunk, and copied as it came if the file is kept."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO

from batchor.engine.context import log
from batchor.errors import TransientProviderError
from batchor.providers.base import Reply
from batchor.stores.base import ItemOutcome

CHUNK = 5_000  # outcomes applied in one transaction
_COPY_DEPTH = 8  # downloaded chunks (1 MB each) waiting to be copied, at most


@dataclass
class Tally:
    """What a batch's collection has counted over its files: billed tokens, items moved out
    of ``submitted``, and (for a batch stopped to finish synchronously) the seqs answered."""

    answered: list[int] | None
    tokens_in: int = 0
    tokens_out: int = 0
    changed: int = 0


class ResultFeed(io.RawIOBase):
    """The writable a result file is downloaded into (a transport's ``download_file``).

    Each whole line is decoded and judged as it arrives and applied with the others of its
    chunk (``apply`` returns how many items it moved); the bytes are copied to ``copy`` if
    given. A download attempt starts with ``seek(0)`` and ``truncate()``: the copy starts
    over, and the lines up to the last chunk applied are passed over unjudged (a provider's
    file does not change; if the passed-over bytes do not end a line, the attempt fails as
    transient and the next one judges the file from its first line), so a download retried
    after a lost connection applies nothing twice and counts every line's tokens once.
    ``end``, after the last attempt, applies the rest and adds the file's counts to
    ``tally``.
    """

    def __init__(
        self,
        decode: Callable[[bytes], tuple[int, Reply | None] | None],
        judge: Callable[[int, Reply], ItemOutcome],
        apply: Callable[[list[ItemOutcome]], int],
        key: str,
        tally: Tally,
        copy: BinaryIO | None = None,
    ) -> None:
        """Feed the file ``key`` (its artifact's name, for the log) into ``tally``."""
        super().__init__()
        self._decode, self._judge, self._apply_chunk = decode, judge, apply
        self._key, self._tally, self._copy = key, tally, copy
        # Up to where the file is applied: its byte offset, tokens and answers by then.
        self._applied = 0
        self._tokens_then = (0, 0)
        self._answered: list[int] = []
        self._answered_then = 0
        self._start()

    def _start(self) -> None:
        self._rest = b""
        self._offset = self._applied  # the file offset of the first line in ``_rest``
        self._skip = self._applied  # bytes of this attempt an earlier one applied
        self._chunk: list[ItemOutcome] = []
        self._tokens = list(self._tokens_then)
        del self._answered[self._answered_then :]
        self.failure: BaseException | None = None  # what judging or applying raised

    def writable(self) -> bool:
        """Always: the file is written into it."""
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        """Back to the start (the only place a download seeks to)."""
        if (offset, whence) != (0, 0):
            raise io.UnsupportedOperation("a result feed only seeks back to its start")
        if self._copy is not None:
            self._copy.seek(0)
        return 0

    def truncate(self, size: int | None = None) -> int:
        """Start a new download attempt."""
        if self._copy is not None:
            self._copy.truncate(0)
        self._start()
        return 0

    def write(self, data: Any) -> int:
        """Judge every line ``data`` completes; apply a chunk once it is full."""
        size = len(data)
        if self._copy is not None:
            self._copy.write(data)
        if self._skip:
            passed = min(self._skip, size)
            self._skip -= passed
            if not self._skip and data[passed - 1 : passed] != b"\n":
                self._forget()
                raise TransientProviderError(
                    f"{self._key}: the provider's file changed between download attempts; "
                    "it is read again from its first line"
                )
            data = data[passed:]
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        try:
            self._lines(lines)
        except BaseException as exc:
            self.failure = exc
            raise
        return size

    def end(self) -> None:
        """The file is whole: judge its last line, apply the rest, count it in the tally."""
        self._lines([self._rest])
        self._rest = b""
        self._apply(self._offset)
        tally = self._tally
        tally.tokens_in += self._tokens[0]
        tally.tokens_out += self._tokens[1]
        if tally.answered is not None:
            tally.answered.extend(self._answered)

    def _lines(self, lines: list[bytes]) -> None:
        decode, judge, chunk, tokens = self._decode, self._judge, self._chunk, self._tokens
        start = self._offset
        for index, raw in enumerate(lines):
            if not raw or raw.isspace():
                continue
            decoded = decode(raw)
            if decoded is None:
                log.warning("%s: skipped a line that is not a batch result", self._key)
                continue
            seq, reply = decoded
            if reply is None:  # never run; stays submitted, requeued without charge
                continue
            outcome = judge(seq, reply)
            tokens[0] += outcome.input_tokens or 0
            tokens[1] += outcome.output_tokens or 0
            chunk.append(outcome)
            if len(chunk) >= CHUNK:
                upto = index + 1  # lines, each with its newline
                self._apply(start + sum(map(len, lines[:upto])) + upto)
                chunk = self._chunk
        self._offset = start + sum(map(len, lines)) + len(lines)

    def _forget(self) -> None:
        """Judge the next attempt from the first line: what was applied is not known to
        be where this file's lines are (applying again changes nothing: it is guarded)."""
        self._applied = 0
        self._tokens_then = (0, 0)
        self._answered_then = 0

    def _apply(self, upto: int) -> None:
        """Apply the chunk: the file is applied up to offset ``upto``."""
        chunk, self._chunk = self._chunk, []
        if self._tally.answered is not None:
            self._answered.extend(o.seq for o in chunk)
        self._tally.changed += self._apply_chunk(chunk)
        self._applied = upto
        self._tokens_then = (self._tokens[0], self._tokens[1])
        self._answered_then = len(self._answered)


class BackgroundCopy:
    """A kept result file's copy, written on a thread of its own while the download goes
    on: a local file's write runs outside the interpreter, so the next lines are judged
    meanwhile. At most a few chunks wait (memory stays flat). ``seek(0)`` and
    ``truncate`` (a download attempt starting over) first wait for the chunks before them.
    An error writing is raised by the next call, or by leaving the ``with`` block normally,
    which waits for every chunk to be written. Left by an exception, the copy is being
    thrown away: the chunks still waiting are dropped, and an error writing is logged.
    """

    def __init__(self, dest: BinaryIO, name: str = "") -> None:
        """Copy into ``dest`` (the artifact ``name``, for the log)."""
        self._dest, self._name = dest, name
        self._queue: queue.Queue[bytes | None] = queue.Queue(_COPY_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._copy, name="batchor-raw-copy", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        while True:
            chunk = self._queue.get()
            try:
                if chunk is None:
                    return
                if self._error is None:
                    self._dest.write(chunk)
            except BaseException as exc:  # raised on the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> int:
        """Hand ``data`` over to be written (waiting while the copy is behind)."""
        self._check()
        self._queue.put(bytes(data))
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek ``dest``, once every chunk before is written."""
        self._queue.join()
        self._check()
        return self._dest.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        """Truncate ``dest``, once every chunk before is written."""
        self._queue.join()
        self._check()
        return self._dest.truncate(size)

    def __enter__(self) -> BackgroundCopy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:  # drop what waits (this thread is the only one adding)
            try:
                while True:
                    self._queue.get_nowait()
                    self._queue.task_done()
            except queue.Empty:
                pass
        self._queue.put(None)
        self._thread.join()
        if kind is None:
            self._check()
        elif self._error is not None:
            log.warning("%s: writing the kept copy failed too: %s", self._name, self._error)
