"""Replayable files (request slices, batch inputs, raw outputs) behind the
:class:`~batchor.artifacts.base.ArtifactStore` port."""
