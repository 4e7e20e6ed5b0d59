"""Replayable files (request slices, batch inputs, raw outputs) behind the
`ArtifactStore` port: on local disk (`LocalArtifactStore`) or in an object store through
fsspec (`FsspecArtifactStore`: ``s3://``, ``gs://``, ``az://``, ``memory://``)."""

from batchor.artifacts.base import ArtifactStore
from batchor.artifacts.fsspec import FsspecArtifactStore
from batchor.artifacts.local import LocalArtifactStore
from batchor.artifacts.open import open_artifacts

__all__ = ["ArtifactStore", "FsspecArtifactStore", "LocalArtifactStore", "open_artifacts"]
