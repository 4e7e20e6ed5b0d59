"""On-disk storage behind the emulated Files API: uploaded files, upload sessions and the
output files batches generate."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchor.testing.gemini.errors import already_exists, invalid_argument
from batchor.testing.gemini.wire import new_id, now_ns, rfc3339

FILE_TTL_NS = 48 * 3600 * 1_000_000_000
"""Files are kept 48 hours (``expirationTime``); the emulator reports it but never deletes."""
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


@dataclass
class GeminiFile:
    """One stored file; its bytes live at `path`."""

    id: str
    """The resource id (the name without ``files/``)."""
    display_name: str | None
    mime_type: str
    size: int
    sha256: str
    """SHA-256 of the bytes as the API shows it: the hex digest, base64-encoded."""
    create_ns: int
    source: str
    """``UPLOADED`` or ``GENERATED`` (a batch's output)."""
    path: Path
    seq: int
    available_at: float = 0.0
    """`time.monotonic` time from which the file is served; until then it answers 403."""

    @property
    def name(self) -> str:
        """The resource name, ``files/{id}``."""
        return f"files/{self.id}"

    def available(self) -> bool:
        """Whether the file may be served yet (see `available_at`)."""
        return time.monotonic() >= self.available_at

    def to_dict(self, origin: str) -> dict[str, Any]:
        """The File resource as the API returns it (``origin``: the server's base URL)."""
        created = rfc3339(self.create_ns)
        body: dict[str, Any] = {"name": self.name}
        if self.display_name:
            body["displayName"] = self.display_name
        body |= {
            "mimeType": self.mime_type,
            "sizeBytes": str(self.size),
            "createTime": created,
            "updateTime": created,
            "expirationTime": rfc3339(self.create_ns + FILE_TTL_NS),
            "sha256Hash": self.sha256,
            "uri": f"{origin}/v1beta/{self.name}",
        }
        if self.source == "GENERATED":
            body["downloadUri"] = f"{origin}/download/v1beta/{self.name}:download?alt=media"
        body |= {"state": "ACTIVE", "source": self.source}
        return body


@dataclass
class UploadSession:
    """A resumable upload under way: its bytes are appended to `path` as they arrive."""

    id: str
    file_id: str
    display_name: str | None
    mime_type: str
    declared_size: int | None
    path: Path
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sha256_field(hasher: Any) -> str:
    """The ``sha256Hash`` value of a finished digest."""
    return base64.b64encode(hasher.hexdigest().encode()).decode()


class GeminiFileStore:
    """Thread-safe registry of files and upload sessions stored under one directory."""

    def __init__(self, root: Path) -> None:
        """Store files under ``root`` (created if missing)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, GeminiFile] = {}
        self._uploads: dict[str, UploadSession] = {}
        self._seq = itertools.count(1)

    def scratch_path(self, label: str) -> Path:
        """A fresh path under the root for a file being written, before it is added."""
        return self.root / f"tmp-{label}-{os.urandom(8).hex()}"

    def start_upload(
        self,
        name: str | None,
        display_name: str | None,
        mime_type: str,
        declared_size: int | None,
    ) -> UploadSession:
        """Open an upload session for a new file named ``name`` (``files/...``) or a fresh id."""
        file_id = name.removeprefix("files/") if name else None
        if file_id is not None and _NAME.match(file_id) is None:
            raise invalid_argument(
                f"Invalid file name: {name}. The id must be 1-40 lowercase letters, digits or "
                "dashes, and may not start or end with a dash."
            )
        session = UploadSession(
            id=secrets_token(),
            file_id=file_id or new_id(12),
            display_name=display_name,
            mime_type=mime_type,
            declared_size=declared_size,
            path=self.scratch_path("upload"),
        )
        with self._lock:
            if session.file_id in self._files or any(
                s.file_id == session.file_id for s in self._uploads.values()
            ):
                raise already_exists(f"File files/{session.file_id} already exists.")
            self._uploads[session.id] = session
        session.path.touch()
        return session

    def upload(self, upload_id: str) -> UploadSession | None:
        """The open upload session ``upload_id``, or ``None``."""
        with self._lock:
            return self._uploads.get(upload_id)

    def end_upload(self, session: UploadSession, *, keep: bool) -> GeminiFile | None:
        """Close ``session``: register its bytes as a file if ``keep``, else discard them."""
        with self._lock:
            self._uploads.pop(session.id, None)
        if not keep:
            session.path.unlink(missing_ok=True)
            return None
        return self._register(
            session.path,
            session.file_id,
            session.display_name,
            session.mime_type,
            "UPLOADED",
            sha256_field(session.hasher),
            0.0,
        )

    def add_generated(
        self, path: Path, file_id: str, mime_type: str, sha256: str, *, available_at: float
    ) -> GeminiFile:
        """Take ownership of a batch's finished output file at ``path`` and register it."""
        return self._register(path, file_id, None, mime_type, "GENERATED", sha256, available_at)

    def _register(
        self,
        path: Path,
        file_id: str,
        display_name: str | None,
        mime_type: str,
        source: str,
        sha256: str,
        available_at: float,
    ) -> GeminiFile:
        final = self.root / f"file-{file_id}"
        os.replace(path, final)
        stored = GeminiFile(
            id=file_id,
            display_name=display_name,
            mime_type=mime_type,
            size=final.stat().st_size,
            sha256=sha256,
            create_ns=now_ns(),
            source=source,
            path=final,
            seq=next(self._seq),
            available_at=available_at,
        )
        with self._lock:
            self._files[file_id] = stored
        return stored

    def get(self, file_id: str) -> GeminiFile | None:
        """The file ``file_id`` (without ``files/``), or ``None``."""
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

    def all(self) -> list[GeminiFile]:
        """Every stored file, oldest first."""
        with self._lock:
            return list(self._files.values())

    def discard_uploads(self) -> None:
        """Drop every unfinished upload session and its bytes."""
        with self._lock:
            sessions = list(self._uploads.values())
            self._uploads.clear()
        for session in sessions:
            session.path.unlink(missing_ok=True)


def secrets_token() -> str:
    """An opaque upload session id, like the service's ``upload_id``."""
    return "ABgVH" + base64.urlsafe_b64encode(os.urandom(48)).decode().rstrip("=")
