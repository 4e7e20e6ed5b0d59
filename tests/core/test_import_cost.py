"""`import batchor`, and importing each integration package, loads no store, artifact-store or
provider library: SQLAlchemy and Alembic load when a store is first opened, pyarrow and fsspec
when a source or artifact store needs them, the provider SDKs when a provider is first used,
Pydantic with the first structured-output model.
An Airflow scheduler pays a DAG file's imports at every parse.

Each check runs in a fresh interpreter (a subprocess), as the test process has long imported
everything; `python -X importtime -c "import batchor"` shows which module pulled in what."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "sqlalchemy",
    "alembic",
    "pyarrow",
    "fsspec",
    "pydantic",
    "openai",
    "anthropic",
    "google.genai",
)
"""Libraries that must not load with the import (each with its submodules)."""

# Imports `first` (the orchestrator: what it loads itself is not batchor's), then runs `code`,
# and prints the modules `code` loaded.
_PROBE = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
before = set(sys.modules)
exec(sys.argv[2])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _heavy_loaded(code: str, *, first: tuple[str, ...] = (), cwd: Path | None = None) -> list[str]:
    """The `HEAVY` libraries that running ``code`` in a fresh interpreter loads."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(first), code],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return sorted(
        {lib for lib in HEAVY for name in loaded if name == lib or name.startswith(f"{lib}.")}
    )


def test_import_batchor_loads_no_store_artifact_or_provider_library() -> None:
    assert _heavy_loaded("import batchor") == []


def test_the_public_names_load_no_store_artifact_or_provider_library() -> None:
    code = "from batchor import *; from batchor import steps"
    assert _heavy_loaded(code) == []


def test_opening_a_store_loads_sqlalchemy(tmp_path: Path) -> None:
    # The probe sees a library that loads: the store's, when a runner opens one.
    code = (
        "import batchor\nbatchor.BatchRunner(store='sqlite:///s.db', artifacts='artifacts').close()"
    )
    assert "sqlalchemy" in _heavy_loaded(code, cwd=tmp_path)


@pytest.mark.parametrize(
    ("orchestrator", "first", "modules"),
    [
        (
            "airflow",
            ("airflow.sdk", "airflow.triggers.base"),
            (
                "batchor_airflow",
                "batchor_airflow.operators",
                "batchor_airflow.sensors",
                "batchor_airflow.triggers",
                "batchor_airflow.hooks",
            ),
        ),
        ("dagster", ("dagster",), ("batchor_dagster",)),
        ("prefect", ("prefect", "prefect.blocks.core"), ("batchor_prefect",)),
    ],
)
def test_importing_an_integration_adds_no_store_artifact_or_provider_library(
    orchestrator: str, first: tuple[str, ...], modules: tuple[str, ...]
) -> None:
    if (
        importlib.util.find_spec(orchestrator) is None
        or importlib.util.find_spec(modules[0]) is None
    ):
        pytest.skip(f"{orchestrator} or {modules[0]} is not installed")
    code = "; ".join(f"import {name}" for name in modules)
    # What the orchestrator imports itself (Airflow: SQLAlchemy, fsspec) is not counted, nor
    # Pydantic, which Dagster and Prefect are built on (and load parts of lazily).
    assert [lib for lib in _heavy_loaded(code, first=first) if lib != "pydantic"] == []
