"""Deterministic, resumable inputs that yield :class:`~batchor.items.BatchItem` s."""
