"""The reconcile step, split by phase: ingest, pack, submit, poll, collect."""
