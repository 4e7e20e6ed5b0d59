"""A streaming ``multipart/form-data`` parser: part bodies are yielded chunk by chunk.

Only a bounded window of the request (one read chunk plus the delimiter length) is ever held
in memory, so arbitrarily large uploads can be written to disk as they arrive.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_MAX_HEADER_BYTES = 16 * 1024
_PARAM = re.compile(r'([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MultipartError(ValueError):
    """The body is not well-formed ``multipart/form-data``."""


@dataclass(frozen=True)
class PartHeaders:
    """The headers of one part that the emulator cares about."""

    name: str
    """The form field name (``Content-Disposition: form-data; name=...``)."""
    filename: str | None
    """The client-side file name, if the part is a file."""
    content_type: str | None
    """The part's ``Content-Type``, if given."""


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a header like ``form-data; name="file"`` into its value and its parameters."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return head.strip().lower(), params


def boundary_from_content_type(content_type: str) -> bytes:
    """Extract the multipart boundary from a ``Content-Type`` header value."""
    kind, params = header_params(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise MultipartError("expected multipart/form-data with a boundary")
    return boundary.encode("latin-1")


class MultipartReader:
    """Iterate the parts of a multipart body read through ``read(size) -> bytes``.

    Call `next_part` to advance to the next part (skipping any unread body of the current
    one), then `iter_body` to stream that part's bytes.
    """

    def __init__(
        self, read: Callable[[int], bytes], boundary: bytes, chunk_size: int = 1 << 20
    ) -> None:
        """Parse the body produced by ``read`` using ``boundary``."""
        self._read = read
        self._chunk_size = chunk_size
        self._first = b"--" + boundary
        self._delim = b"\r\n--" + boundary
        self._buf = bytearray()
        self._eof = False
        self._state = "preamble"

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._read(self._chunk_size)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _need(self, count: int) -> None:
        while len(self._buf) < count:
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")

    def next_part(self) -> PartHeaders | None:
        """Advance to the next part and return its headers, or ``None`` after the last one."""
        if self._state == "body":
            for _ in self.iter_body():
                pass
        if self._state == "preamble":
            self._skip_preamble()
        if self._state == "done":
            return None
        self._need(2)
        if self._buf[:2] == b"--":
            self._state = "done"
            return None
        end = self._find(b"\r\n", 1024)
        del self._buf[: end + 2]  # transport padding and the CRLF after the delimiter
        return self._parse_headers()

    def iter_body(self) -> Iterator[bytes]:
        """Yield the bytes of the current part's body, in chunks, up to its delimiter."""
        if self._state != "body":
            return
        delim = self._delim
        keep = len(delim) - 1
        while True:
            index = self._buf.find(delim)
            if index >= 0:
                chunk = bytes(self._buf[:index])
                del self._buf[: index + len(delim)]
                self._state = "delimiter"
                if chunk:
                    yield chunk
                return
            if len(self._buf) > keep:
                chunk = bytes(self._buf[:-keep])
                del self._buf[:-keep]
                yield chunk
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")

    def _find(self, needle: bytes, limit: int) -> int:
        start = 0
        while True:
            index = self._buf.find(needle, start)
            if index >= 0:
                return index
            if len(self._buf) > limit:
                raise MultipartError("multipart headers too long")
            start = max(0, len(self._buf) - len(needle) + 1)
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")

    def _skip_preamble(self) -> None:
        while True:
            index = self._buf.find(self._first)
            if index == 0 or (index > 0 and self._buf[index - 2 : index] == b"\r\n"):
                del self._buf[: index + len(self._first)]
                self._state = "delimiter"
                return
            if index < 0 and len(self._buf) > _MAX_HEADER_BYTES:
                raise MultipartError("multipart boundary not found")
            if not self._fill():
                raise MultipartError("multipart boundary not found")

    def _parse_headers(self) -> PartHeaders:
        self._need(2)
        if self._buf[:2] == b"\r\n":
            raw = b""
            del self._buf[:2]
        else:
            end = self._find(b"\r\n\r\n", _MAX_HEADER_BYTES)
            raw = bytes(self._buf[:end])
            del self._buf[: end + 4]
        name: str | None = None
        filename: str | None = None
        content_type: str | None = None
        for line in raw.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "content-disposition":
                _, params = header_params(value)
                name = params.get("name")
                filename = params.get("filename")
            elif key == "content-type":
                content_type = value.strip()
        if name is None:
            raise MultipartError("multipart part without a form-data name")
        self._state = "body"
        return PartHeaders(name=name, filename=filename, content_type=content_type)
