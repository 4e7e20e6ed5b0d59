"""On-disk file storage behind the emulator's Files API: one disk file per stored file."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_PURPOSES: frozenset[str] = frozenset(
    {"batch", "batch_output", "fine-tune", "assistants", "user_data", "vision", "evals"}
)
"""Purposes ``POST /v1/files`` accepts (``batch_output`` files are also created by batches)."""


@dataclass(frozen=True)
class StoredFile:
    """Metadata of one stored file; its bytes live at `path`."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path
    available_at: float = 0.0
    """`time.monotonic` time from which the file is served; until then it answers 404."""

    def available(self) -> bool:
        """Whether the file may be served yet (see `available_at`)."""
        return time.monotonic() >= self.available_at

    def to_dict(self) -> dict[str, Any]:
        """The File object as the API returns it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class FileStore:
    """Thread-safe registry of files stored under one directory."""

    def __init__(self, root: Path) -> None:
        """Store files under ``root`` (created if missing)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}  # insertion order == creation order

    def scratch_path(self, label: str) -> Path:
        """A fresh path under the root for a file being written, before it is added."""
        return self.root / f"tmp-{label}-{os.urandom(8).hex()}"

    def add(
        self, path: Path, filename: str, purpose: str, *, available_at: float = 0.0
    ) -> StoredFile:
        """Take ownership of the finished disk file ``path`` and register it.

        The file answers 404 until `time.monotonic` reaches ``available_at``.
        """
        file_id = "file-" + os.urandom(12).hex()
        final = self.root / file_id
        os.replace(path, final)
        stored = StoredFile(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=final.stat().st_size,
            created_at=int(time.time()),
            path=final,
            available_at=available_at,
        )
        with self._lock:
            self._files[file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file with ``file_id``, or ``None``."""
        with self._lock:
            return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        """Delete a file and its bytes; return whether it existed."""
        with self._lock:
            stored = self._files.pop(file_id, None)
        if stored is None:
            return False
        stored.path.unlink(missing_ok=True)
        return True

    def all(self) -> list[StoredFile]:
        """Every stored file, oldest first."""
        with self._lock:
            return list(self._files.values())

    def page(
        self, *, purpose: str | None, limit: int, after: str | None, order: str
    ) -> tuple[list[StoredFile], bool]:
        """One page of files in ``order`` ("asc" or "desc") and whether more follow it."""
        files = [f for f in self.all() if purpose is None or f.purpose == purpose]
        if order == "desc":
            files.reverse()
        if after is not None:
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        return files[:limit], len(files) > limit
