"""Deterministic, resumable inputs that yield `BatchItem` s."""
