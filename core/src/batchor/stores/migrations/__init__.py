"""Alembic migrations of the control-plane schema, applied when a store opens."""
