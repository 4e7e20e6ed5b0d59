"""batchor for prefect (work in progress)."""
