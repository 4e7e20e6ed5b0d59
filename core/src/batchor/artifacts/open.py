"""Artifact locations from what users pass: a path, a URL or an artifact store."""

from __future__ import annotations

import os
import re
from pathlib import Path

from batchor.artifacts.base import ArtifactStore
from batchor.artifacts.fsspec import FsspecArtifactStore
from batchor.artifacts.local import LocalArtifactStore

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_artifacts(artifacts: str | os.PathLike[str] | ArtifactStore) -> ArtifactStore:
    """An artifact store for a directory path or ``file://`` URL (local files), any other
    fsspec URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``memory://``, ...), or a store
    object (returned as is).

    Raises:
        ConfigurationError: the URL's scheme is unknown, or its backend library is missing
            (the message names the extra to install, e.g. ``pip install 'batchor[s3]'``).
    """
    if isinstance(artifacts, str | os.PathLike):
        text = os.fspath(artifacts)
        if _URL.match(text) and not text.lower().startswith("file://"):
            return FsspecArtifactStore(text)
        return LocalArtifactStore(Path(text[7:] if text.lower().startswith("file://") else text))
    return artifacts
