"""Replayable files (request slices, batch inputs, raw outputs) behind the
`ArtifactStore` port."""
