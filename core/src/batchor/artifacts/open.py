"""Artifact locations from what users pass: a path, a URL or an artifact store."""

from __future__ import annotations

import os
import re
from pathlib import Path

from batchor.artifacts.base import ArtifactStore
from batchor.artifacts.fsspec import FsspecArtifactStore
from batchor.artifacts.local import LocalArtifactStore
from batchor.errors import ConfigurationError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an object-store URL (any ``scheme://`` but ``file://``)."""
    text = os.fspath(location)
    return bool(_URL.match(text)) and not text.lower().startswith("file://")


def local_path(location: str | os.PathLike[str]) -> Path:
    """The local path a location names (a ``file://`` URL's path, or the path itself)."""
    text = os.fspath(location)
    return Path(text[7:] if text.lower().startswith("file://") else text)


def open_artifacts(artifacts: str | os.PathLike[str] | ArtifactStore) -> ArtifactStore:
    """An artifact store for a directory path or ``file://`` URL (local files), any other
    fsspec URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``memory://``, ...), or a store
    object (returned as is).

    Raises:
        ConfigurationError: the URL's scheme is unknown, or its backend library is missing
            (the message names the extra to install, e.g. ``pip install 'batchor[s3]'``).
    """
    if isinstance(artifacts, str | os.PathLike):
        if is_url(artifacts):
            return FsspecArtifactStore(os.fspath(artifacts))
        return LocalArtifactStore(local_path(artifacts))
    return artifacts


def location(artifacts: ArtifactStore) -> str:
    """Where an artifact store keeps its files, for messages (never a credential)."""
    if isinstance(artifacts, LocalArtifactStore):
        return str(artifacts.root)
    if isinstance(artifacts, FsspecArtifactStore):
        return artifacts.url
    return type(artifacts).__name__


def is_process_local(artifacts: ArtifactStore) -> bool:
    """Whether the artifacts live only as long as this process (fsspec's ``memory://``)."""
    return isinstance(artifacts, FsspecArtifactStore) and artifacts.url.startswith("memory:")


def check_writable(artifacts: ArtifactStore, folder: str) -> None:
    """Write and remove a small file under ``folder``, so that an artifact location that
    cannot be written fails before anything depends on it.

    Raises:
        ConfigurationError: the write failed with an ``OSError`` (permissions, a file where
            a directory should be, a read-only filesystem, a full disk); names the location.
    """
    key = f"{folder}/.write-check"
    try:
        with artifacts.open_write(key) as fh:
            fh.write(b"batchor\n")
        artifacts.delete(key)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigurationError(
            f"cannot write to the artifact location {location(artifacts)} ({reason}); "
            "give a writable directory or object-store URL for the artifacts"
        ) from None
