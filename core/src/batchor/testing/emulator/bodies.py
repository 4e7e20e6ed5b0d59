"""Streaming readers for HTTP request bodies (``Content-Length`` and chunked encoding)."""

from __future__ import annotations

from typing import BinaryIO

_DRAIN_CHUNK = 1 << 20


class BodyError(ValueError):
    """The request body is malformed or larger than allowed."""


class BodyReader:
    """Read a request body incrementally, never holding more than one chunk in memory."""

    def __init__(self, rfile: BinaryIO, content_length: int | None, chunked: bool) -> None:
        """Wrap ``rfile``; with neither a length nor chunked encoding the body is empty."""
        self._rfile = rfile
        self._chunked = chunked
        self._remaining = 0 if chunked else max(content_length or 0, 0)
        self._done = not chunked and self._remaining == 0
        self.consumed = 0
        """Bytes of body read so far."""

    @property
    def done(self) -> bool:
        """Whether the whole body has been read."""
        return self._done

    def read(self, size: int) -> bytes:
        """Return up to ``size`` bytes of body; ``b""`` once the body is exhausted."""
        if self._done or size <= 0:
            return b""
        if self._chunked and self._remaining == 0 and not self._next_chunk():
            return b""
        data = self._rfile.read(min(size, self._remaining))
        if not data:
            raise BodyError("connection closed in the middle of the request body")
        self._remaining -= len(data)
        self.consumed += len(data)
        if self._remaining == 0:
            if self._chunked:
                self._expect_crlf()
            else:
                self._done = True
        return data

    def read_all(self, limit: int) -> bytes:
        """Read the rest of the body; raise `BodyError` if it is longer than ``limit``."""
        parts: list[bytes] = []
        total = 0
        while True:
            data = self.read(min(_DRAIN_CHUNK, limit + 1 - total))
            if not data:
                return b"".join(parts)
            total += len(data)
            if total > limit:
                raise BodyError(f"request body is larger than {limit} bytes")
            parts.append(data)

    def drain(self) -> None:
        """Read and discard whatever is left of the body."""
        while self.read(_DRAIN_CHUNK):
            pass

    def _next_chunk(self) -> bool:
        line = self._rfile.readline(1 << 16)
        if not line.endswith(b"\n"):
            raise BodyError("malformed chunk size line")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise BodyError("malformed chunk size line") from exc
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = self._rfile.readline(1 << 16)
                if trailer in (b"\r\n", b"\n", b""):
                    break
            self._done = True
            return False
        self._remaining = size
        return True

    def _expect_crlf(self) -> None:
        if self._rfile.readline(3).strip():
            raise BodyError("malformed chunk terminator")
