"""batchor for dagster (work in progress)."""
