"""The provider registers through its entry point without importing Airflow, and its trigger
serialises without secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip("airflow")


def test_entry_point_gives_valid_provider_info_without_importing_airflow() -> None:
    (ep,) = [
        e
        for e in entry_points(group="apache_airflow_provider")
        if e.name == "provider_info" and e.value.startswith("batchor_airflow")
    ]
    code = (
        "import sys, json\n"
        "from batchor_airflow import get_provider_info\n"
        "info = get_provider_info()\n"
        "print(json.dumps({'info': info, 'airflow': any(m.split('.')[0] == 'airflow' "
        "for m in sys.modules)}))\n"
    )
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    assert out["airflow"] is False
    info = out["info"]
    assert info == ep.load()()

    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    for section in ("operators", "sensors", "triggers", "hooks"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                __import__(module)


def test_providers_manager_lists_the_hook_module_and_trigger() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "batchor-airflow" in manager.providers
    triggers = {t.package_name for t in manager.trigger}
    assert "batchor-airflow" in triggers


def test_trigger_round_trips_and_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchor_airflow import BatchorRunOperator, BatchorRunTrigger

    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-serialised")
    op = BatchorRunOperator(
        task_id="t",
        job="m:f",
        destination="x.jsonl",
        poll_interval=5,
        store="sqlite:///s.db",
        cancel_on_kill=True,
    )
    classpath, kwargs = op.trigger_for("run-1").serialize()
    assert classpath == "batchor_airflow.triggers.BatchorRunTrigger"
    assert "sk-never" not in json.dumps(kwargs)
    assert set(kwargs) == {
        "run_id",
        "conn_id",
        "store",
        "artifacts",
        "poll_interval",
        "check_interval",
        "cancel_on_kill",
    }
    again = BatchorRunTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
