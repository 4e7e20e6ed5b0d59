"""Shared fixtures: every test runs offline, against the emulator or nothing."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

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

# Bytecode is kept (beside the sources, in the git-ignored __pycache__ folders) even where the
# machine sets PYTHONDONTWRITEBYTECODE, as this project's CI machines do: otherwise every
# pytest-xdist worker rewrites the asserts of every test module afresh when it collects them
# (about half of a worker's collection), and every Python process a test starts compiles
# batchor again. Set before any test module is imported; the workers and the processes the
# tests start inherit the environment.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False


def _one_ca_certificate() -> Path | None:
    """A CA file holding a single certificate (the first of the system's or certifi's bundle).

    Every HTTP client the tests make (the provider SDKs, the orchestrators' clients) builds an
    SSL context on creation, and loading a whole CA bundle into it costs ~40 ms: a test making
    twenty clients spent most of a second on it. The tests only speak plain HTTP to loopback
    servers, so which CAs are trusted never matters; a call that escaped to a real HTTPS
    service would fail its certificate check, as it should fail anyway."""
    bundles = [ssl.get_default_verify_paths().openssl_cafile]
    if importlib.util.find_spec("certifi") is not None:
        import certifi

        bundles.append(certifi.where())
    end = "-----END CERTIFICATE-----"
    for bundle in bundles:
        try:
            text = Path(bundle).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        begin = text.find("-----BEGIN CERTIFICATE-----")
        stop = text.find(end, begin)
        if begin >= 0 and stop > begin:
            path = _HOMES / "one-ca.pem"
            path.write_text(text[begin : stop + len(end)] + "\n", encoding="ascii")
            return path
    return None


if (_ca := _one_ca_certificate()) is not None:
    # What they were, for the tests that open a new terminal and reach the package registry
    # (tests/test_quickstarts.py): that one must trust the real CAs.
    # (Recorded once: pytest-xdist's workers inherit the controller's changed environment.)
    for _name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        os.environ.setdefault(f"BATCHOR_TESTS_ORIGINAL_{_name}", os.environ.get(_name, ""))
    os.environ["SSL_CERT_FILE"] = str(_ca)
    os.environ.pop("SSL_CERT_DIR", None)

pytest_plugins = ["batchor.testing.pytest_plugin", "tests.s3_server", "tests.postgres"]

# An integration's tests need its orchestrator: in an environment without it (the core-only
# CI run), its folder is not collected at all.
_ORCHESTRATORS = ("airflow", "dagster", "prefect")
collect_ignore = [name for name in _ORCHESTRATORS if importlib.util.find_spec(name) is None]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (the pytest options): two workers per core. The tests spend about half
    their time waiting (on the emulators' batch phases, child processes, Postgres), so a
    worker per core left the cores half idle: on 2 cores, 4 workers run the suite in about
    three quarters of the time 2 take. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when
    set, and ``-n N`` as ever."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist reads it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 * (cores or 1)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Keep each orchestrator's tests on one pytest-xdist worker (``--dist loadgroup`` in the
    pytest options): its session fixtures (the Prefect test server, the Airflow metadata DB)
    then start once, not once per worker; every other test is scheduled on its own.

    The grouping is done here, by the scheduler, rather than with ``xdist_group`` marks:
    pytest-xdist 3.8 applies those by renaming the nodeid, which pytest 9.2 ignores (it keeps
    its own structured id), so the marks silently group nothing."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    try:
        tests = Path(__file__).parent.relative_to(config.rootpath).parts
    except ValueError:  # a rootdir that does not hold this folder: xdist's own grouping
        return None
    depth = len(tests)

    class OrchestratorGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = Path(nodeid.split("::", 1)[0]).parts
            inside = parts[:depth] == tests and len(parts) > depth + 1
            if inside and parts[depth] in _ORCHESTRATORS:
                return parts[depth]
            return str(super()._split_scope(nodeid))

    return OrchestratorGroups(config, log)


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
