"""The operator CLI (``batchor``) for file-based jobs."""
