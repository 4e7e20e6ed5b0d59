"""Shared fixtures: every test runs offline, against the emulator or nothing."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The orchestrators read their settings when first imported: give each a private home under a
# temporary directory, with telemetry and examples off, before any test module imports one.
_HOMES = Path(tempfile.mkdtemp(prefix="batchor-tests-"))
atexit.register(shutil.rmtree, _HOMES, ignore_errors=True)
for _name in ("airflow", "dagster", "prefect"):
    (_HOMES / _name).mkdir()
(_HOMES / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOMES / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "DAGSTER_HOME": str(_HOMES / "dagster"),
        "PREFECT_HOME": str(_HOMES / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
)
os.environ.pop("PREFECT_API_URL", None)

pytest_plugins = ["batchor.testing.pytest_plugin", "tests.s3_server", "tests.postgres"]

# An integration's tests need its orchestrator: in an environment without it (the core-only
# CI run), its folder is not collected at all.
_ORCHESTRATORS = ("airflow", "dagster", "prefect")
collect_ignore = [name for name in _ORCHESTRATORS if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each orchestrator's tests on one pytest-xdist worker (``--dist loadgroup`` in the
    pytest options): its session fixtures (the Prefect test server, the Airflow metadata DB)
    then start once, not once per worker."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    tests = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(tests):
            folder = item.path.relative_to(tests).parts[0]
            if folder in _ORCHESTRATORS:
                item.add_marker(pytest.mark.xdist_group(folder))


# Any call that escapes the emulator fails at once instead of reaching a real service.
_NOWHERE = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", _NOWHERE)
    monkeypatch.delenv("BATCHOR_STORE", raising=False)
    monkeypatch.delenv("BATCHOR_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)
