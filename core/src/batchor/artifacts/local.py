"""Artifacts on the local filesystem, written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from batchor.errors import ConfigurationError


class LocalArtifactStore:
    """An `ArtifactStore` under a root directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        """The directory every artifact lives under."""

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ConfigurationError(f"artifact key {key!r} escapes the artifact root")
        return path

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Write ``key`` atomically: a temp file beside it, fsync, then rename over it."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for reading."""
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every artifact key under the folder ``prefix``, sorted (temporary files of
        writes in progress left out)."""
        folder = self._path(prefix)
        if not folder.is_dir():
            return
        found = (
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        )
        yield from sorted(found)

    def size(self, key: str) -> int:
        """The artifact's size in bytes."""
        return self._path(key).stat().st_size

    def uri(self, key: str) -> str:
        """The artifact's absolute path."""
        return str(self._path(key))
