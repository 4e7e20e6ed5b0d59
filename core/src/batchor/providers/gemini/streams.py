"""Binary stream adapters the Files API calls need: a counting writer for downloads and a
seekable reader over any file-like object for uploads."""

from __future__ import annotations

import io
from typing import Any, BinaryIO


class Counter(io.RawIOBase):
    """A write-only stream counting the bytes written through it into ``dest``."""

    def __init__(self, dest: BinaryIO) -> None:
        """Write into ``dest``."""
        super().__init__()
        self._dest = dest
        self.written = 0

    def writable(self) -> bool:
        """Always: it is written to."""
        return True

    def write(self, data: Any) -> int:
        """Write ``data`` to the destination and count it."""
        self._dest.write(data)
        self.written += len(data)
        return len(data)


class Reader(io.RawIOBase):
    """A seekable binary stream over any object with ``read``, ``seek`` and ``tell`` (the SDK
    uploads ``io.IOBase`` streams only)."""

    def __init__(self, source: BinaryIO) -> None:
        """Read from ``source``."""
        super().__init__()
        self._source = source

    def readable(self) -> bool:
        """Always: it is read from."""
        return True

    def seekable(self) -> bool:
        """Always: the source seeks."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; returns the bytes read."""
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all with ``-1``)."""
        return self._source.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Seek the source."""
        return self._source.seek(offset, whence)

    def tell(self) -> int:
        """The source's position."""
        return self._source.tell()
