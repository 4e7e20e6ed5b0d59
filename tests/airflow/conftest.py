"""Airflow test setup: one DAGs folder (the test DAGs and the example DAG) and a migrated
metadata DB in the session's temporary AIRFLOW_HOME, both before anything imports Airflow."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchor.testing import OpenAIBatchEmulator

HERE = Path(__file__).parent
EXAMPLE = HERE.parents[1] / "examples" / "airflow"
DAGS = Path(tempfile.mkdtemp(prefix="batchor-airflow-dags-"))
for _source in [*(HERE / "dags").glob("*.py"), *EXAMPLE.glob("*.py"), *EXAMPLE.glob("*.csv")]:
    shutil.copy(_source, DAGS / _source.name)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's Airflow metadata DB, migrated once; returns the DAGs folder."""
    pytest.importorskip("airflow")
    from airflow.utils import db

    db.initdb()
    return DAGS


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[OpenAIBatchEmulator]:
    """A started emulator; ``phase_seconds`` comes from indirect parametrization (default 0)."""
    with OpenAIBatchEmulator(phase_seconds=getattr(request, "param", 0.0)) as emu:
        yield emu


@pytest.fixture
def batchor_env(
    airflow_db: Path, emulator: OpenAIBatchEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Store, artifacts, results directory and credentials of a test, in the environment
    (the hooks fall back to it when the connection is not defined)."""
    env = {
        "BATCHOR_STORE": f"sqlite:///{tmp_path}/batchor.db",
        "BATCHOR_ARTIFACTS": str(tmp_path / "artifacts"),
        "BATCHOR_TEST_RESULTS": str(tmp_path / "results"),
        "OPENAI_API_KEY": emulator.api_key,
        "OPENAI_BASE_URL": emulator.base_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
