"""The store contract suite's fixtures: every test runs on each backend in turn - the
in-memory store, a real SQLite file and the real Postgres server (a schema of its own per
module) - against one store opened per module and emptied before each test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor.stores.open import open_store
from batchor.stores.schema import batches, completions, item_failures, items, runs, token_budget
from batchor.stores.sql import SqlStateStore
from tests.postgres import PG_URL, _ensure_postgres

# Children first, so foreign keys hold while the rows go.
_TABLES = (item_failures, completions, items, batches, runs, token_budget)


@dataclass
class Backend:
    """One backend: its name, its URL (``None`` for the in-memory store) and a store on it."""

    name: str
    url: str | None
    store: SqlStateStore

    def empty(self) -> None:
        """Delete every row (the schema stays: migrating per test would cost more)."""
        with self.store.engine.begin() as conn:
            for table in _TABLES:
                conn.execute(table.delete())

    def another(self) -> SqlStateStore:
        """A second store object on the same database, as another worker would open (the
        in-memory store lives in one object: its rival is itself)."""
        return self.store if self.url is None else open_store(self.url)


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """Each backend in turn, opened once per module."""
    name: str = request.param
    schema: str | None = None
    if name == "memory":
        url = None
    elif name == "sqlite":
        folder: Path = tmp_path_factory.mktemp("store")
        url = f"sqlite:///{folder}/batchor.db"
    else:
        schema = f"c_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(PG_URL)
        _ensure_postgres(admin)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        admin.dispose()
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    store = open_store(url or "memory://")
    try:
        yield Backend(name, url, store)
    finally:
        store.close()
        if schema is not None:
            admin = sa.create_engine(PG_URL)
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


@pytest.fixture
def store(backend: Backend) -> SqlStateStore:
    """The backend's store, empty."""
    backend.empty()
    return backend.store


@pytest.fixture
def rival(backend: Backend, store: SqlStateStore) -> Iterator[SqlStateStore]:
    """Another worker's store on the same database."""
    other = backend.another()
    yield other
    if other is not store:
        other.close()
