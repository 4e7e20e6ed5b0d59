"""Artifact locations from what users pass: a path, a URL or an artifact store."""

from __future__ import annotations

import os
from pathlib import Path

from batchor.artifacts.base import ArtifactStore
from batchor.artifacts.local import LocalArtifactStore
from batchor.errors import ConfigurationError


def open_artifacts(artifacts: str | os.PathLike[str] | ArtifactStore) -> ArtifactStore:
    """An artifact store for a directory path, a ``file://`` URL, or a store object."""
    if isinstance(artifacts, str | os.PathLike):
        text = os.fspath(artifacts)
        if "://" in text and not text.startswith("file://"):
            scheme = text.split("://", 1)[0]
            raise ConfigurationError(
                f"artifact URL scheme {scheme!r} is not supported by this version; "
                "use a local directory"
            )
        return LocalArtifactStore(Path(text.removeprefix("file://")))
    return artifacts
