"""Store fixtures shared by every test folder: store URLs for a SQLite file and for the real
Postgres server (a fresh schema per test). Registered as a plugin in tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

#: The Postgres server the tests use (trust auth on the machine and in CI).
PG_URL = os.environ.get(
    "BATCHOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _ensure_postgres(engine: sa.Engine) -> None:
    """Start the machine's Postgres cluster if it is down (the test command does its own
    set-up), then wait for it."""
    try:
        with engine.connect():
            return
    except sa.exc.OperationalError:
        pass
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail(f"Postgres is not reachable at {PG_URL} and there is no cluster to start")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"],
        check=False,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with engine.connect():
                return
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A store URL on Postgres whose tables live in a schema of their own, dropped after."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    _ensure_postgres(admin)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/batchor.db"
    url: str = request.getfixturevalue("pg_url")
    return url
